//! Thread settings for the host's binaries.

/// candle's environment variable for how many times an idle worker of its element-wise thread
/// pool spins (a `pause` each) before it parks; candle 0.11's default is 25,000.
pub const SPIN_LIMIT_VARIABLE: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// The spin limit the host sets when the environment names none: park at once.
const SPIN_LIMIT: &str = "0";

/// The value to set `CANDLE_BARRIER_POOL_SPIN_LIMIT` to, given its current value: none when
/// the user chose one.
fn spin_limit_to_set(current: Option<std::ffi::OsString>) -> Option<&'static str> {
    match current {
        Some(_) => None,
        None => Some(SPIN_LIMIT),
    }
}

/// Makes candle's element-wise pool workers park as soon as their part of an op is done
/// instead of spinning for the next op. The pool's idle worker otherwise spins after every
/// element-wise op (a training backward runs thousands: a zero tensor and a sum per gradient)
/// on a core that rayon's matrix products want: a 5×512-token SmolLM2 training step ran at
/// 132–135 tok/s with workers that park at once against 119–120 with candle's default, and
/// decoding did not change measurably (`cargo bench --bench model_speed`, 2 threads).
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` in the environment still wins. Call first thing in `main`,
/// before any thread starts (candle reads the variable when its pool starts).
pub fn park_idle_candle_workers() {
    if let Some(value) = spin_limit_to_set(std::env::var_os(SPIN_LIMIT_VARIABLE)) {
        // SAFETY: called at the start of `main`, before this process starts a thread, so
        // nothing reads the environment concurrently.
        unsafe { std::env::set_var(SPIN_LIMIT_VARIABLE, value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_limit_is_set_only_when_the_user_chose_none() {
        assert_eq!(spin_limit_to_set(None), Some("0"));
        assert_eq!(spin_limit_to_set(Some("25000".into())), None);
        assert_eq!(spin_limit_to_set(Some("".into())), None);
    }
}
