//! `RUNTIME_THREAD_DEV_MODE` switches the development mode on, as `PYTHONDEVMODE` does Python's.
//! A test binary of its own: it changes the process's environment.

use runtime_thread::{DEV_MODE_VARIABLE, RuntimeThread};

#[test]
fn the_environment_variable_switches_the_mode_on_and_the_builder_overrides_it() {
    // SAFETY: the only test in this binary, so no other thread reads the environment now.
    unsafe { std::env::set_var(DEV_MODE_VARIABLE, "1") };
    let rt = RuntimeThread::builder().name("dev-env").start().unwrap();
    assert!(
        rt.stop().unwrap().dev.is_some(),
        "the variable switches it on"
    );

    let rt = RuntimeThread::builder().dev_mode(false).start().unwrap();
    assert!(
        rt.stop().unwrap().dev.is_none(),
        "the builder has the last word"
    );

    // SAFETY: as above.
    unsafe { std::env::set_var(DEV_MODE_VARIABLE, "0") };
    let rt = RuntimeThread::builder().start().unwrap();
    assert!(rt.stop().unwrap().dev.is_none(), "`0` leaves it off");
    // SAFETY: as above.
    unsafe { std::env::remove_var(DEV_MODE_VARIABLE) };
}
