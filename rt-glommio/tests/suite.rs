//! openraft's own conformance suite for runtimes, run on glommio.

use openraft_rt::testing::Suite;
use tallykv_rt_glommio::GlommioRuntime;

#[test]
fn openraft_runtime_suite() {
    Suite::<GlommioRuntime>::test_all();
}
