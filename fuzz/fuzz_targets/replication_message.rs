//! CopyData messages from the server (XLogData, keepalive): any bytes give an answer, never a
//! panic, and a parsed XLogData's payload is exactly the bytes after its header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreceivewal::protocol::ServerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(ServerMessage::XLogData { data: payload, .. }) = ServerMessage::parse(data) {
        assert_eq!(payload, &data[25..]);
    }
});
