//! The parser on arbitrary bytes: it never panics, and what it accepts is
//! consistent (header offsets inside the frame).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((key, layout)) = dse_datapath::pipeline::parse(data, 0, 0) {
        assert!(layout.l3 <= data.len() && layout.l4 <= data.len() && layout.ip_end <= data.len());
        if layout.l4 != 0 {
            assert!(layout.l4 > layout.l3 && layout.l4 < layout.ip_end.max(layout.l4 + 1));
            assert_ne!(key.flags & dse_datapath::compile::FLAG_L4, 0);
        }
    }
});
