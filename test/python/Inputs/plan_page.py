"""Plan.to_html() for test/python/html.test:

    plan_page.py MODEL OUT.html [--routing FILE] [--save PLAN] [--loaded PLAN]

Compiles MODEL for ep=4 and writes its page (with the routing file, if
given); --save also writes the plan; --loaded instead draws a plan loaded
from a file (an error: it has no compile report)."""
import argparse

import moec

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--routing")
ap.add_argument("--save")
ap.add_argument("--loaded")
a = ap.parse_args()
try:
    if a.loaded:
        moec.load(a.loaded).to_html(a.out)
    else:
        plan = moec.compile(a.model, mesh="ep=4")
        html = plan.to_html(a.out, routing=a.routing)
        print(f"page: {len(html)} characters")
        if a.save:
            plan.save(a.save)
except moec.PlanError as e:
    print(f"raised PlanError: {e}")
