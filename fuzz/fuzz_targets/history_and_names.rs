//! Text read from the archive directory and from the server: timeline history files, the
//! archive metadata file, WAL file names and LSNs. Never a panic; names and LSNs that parse
//! print back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreceivewal::physical::archive::parse_meta;
use pgreceivewal::lsn::Lsn;
use pgreceivewal::physical::timeline::parse_history;
use pgreceivewal::physical::walfile::WalName;

fuzz_target!(|input: (u32, &[u8])| {
    let (tli, data) = input;
    let _ = parse_history(data, tli);
    let _ = parse_meta(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(lsn) = text.parse::<Lsn>() {
            assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }
        if let Some(name) = WalName::parse(text) {
            for seg_size in [1u64 << 20, 16 << 20, 1 << 30] {
                if let Some(id) = name.segment(seg_size) {
                    let again = if name.is_partial() { id.partial_name(seg_size) } else { id.file_name(seg_size) };
                    assert_eq!(again, text);
                }
            }
        }
    }
});
