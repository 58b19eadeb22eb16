#!/usr/bin/env python3
"""onnxruntime-genai's own greedy generation on builder models, the
reference of test/moec/generate-builder.test: for each model directory
given (a builder output with genai_config.json), 16 new tokens after the
prompt below, written as generate.npy (int64 [1, 24]) next to the model.

    genai_ids.py examples/builder/models/gpt_oss/fp32 ...

Needs onnxruntime-genai (PyPI, 0.18)."""
import os
import sys

import numpy as np
import onnxruntime_genai as og

PROMPT = np.array([[5, 17, 42, 99, 7, 63, 120, 11]], np.int64)
NEW = 16

for d in sys.argv[1:]:
    model = og.Model(d)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, batch_size=1,
                              max_length=PROMPT.shape[1] + NEW)
    gen = og.Generator(model, params)
    gen.append_tokens(PROMPT)
    while not gen.is_done():
        gen.generate_next_token()
    ids = np.array([list(gen.get_sequence(0))], np.int64)
    np.save(os.path.join(d, "generate.npy"), ids)
    print(d, ids.tolist())
