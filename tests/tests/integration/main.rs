//! The workspace's integration tests, in one test binary: each of these modules links the whole
//! of Focal and burn, so one binary instead of six saves five links and five compilations of
//! the same generic code (issue 31).

mod common;

mod backend_parity;
mod golden_attention;
mod golden_blocks;
mod golden_heads;
mod golden_pretrained;
mod malformed_configs;
