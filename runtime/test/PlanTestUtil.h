//===- PlanTestUtil.h - verifyPlan checks of the runtime tests -*- C++ -*-===//
//
// Edits of a hand-built plan that verifyPlan must refuse, shared by
// DynamicTokensTest.cpp and RowBlocksTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_PLANTESTUTIL_H
#define MOERT_TEST_PLANTESTUTIL_H

#include "moert/Plan.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace moert::test {

/// verifyPlan's message for `plan` after `edit`; the plan must verify
/// before the edit and not after it.
inline std::string verifyErrorAfter(Plan plan,
                                    const std::function<void(Plan &)> &edit) {
  std::string error;
  EXPECT_TRUE(verifyPlan(plan, error)) << error;
  edit(plan);
  error.clear();
  EXPECT_FALSE(verifyPlan(plan, error));
  return error;
}

/// The value of `p` named `name` (a test failure, and value 0, when none).
inline Value &valueNamed(Plan &p, const std::string &name) {
  for (Value &v : p.values)
    if (v.name == name)
      return v;
  ADD_FAILURE() << "no value " << name;
  return p.values[0];
}

} // namespace moert::test

#endif // MOERT_TEST_PLANTESTUTIL_H
