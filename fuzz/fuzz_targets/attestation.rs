#![no_main]
// The logic lives in rebake::fuzzing so that tests/all/fuzz_corpora.rs replays the corpus on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rebake::fuzzing::attestation_target(data));
