//! The do-nothing server: the machine's IPC ceiling for this protocol.
//!
//! One thread runs an epoll loop (tokio's current-thread runtime). Every complete
//! frame, whatever it says, is answered with the 28-byte success reply to its header:
//!
//! ```text
//! in:  [len][prog vers proc type serial status][payload...]
//! out: [0000001c][prog vers proc][00000001][serial][00000000]
//! ```
//!
//! Replies to all frames found in one read are written with one write. A frame whose
//! length word is below 28 (no header) or above the protocol maximum closes the
//! connection. No lock work is done.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::LocalSet;
use vmlock_proto::limits::{LEN_WORD, MESSAGE_MAX};

use crate::error::{BenchError, Result};
use crate::frames::{EMPTY_FRAME_LEN, success_reply};

/// A frame the do-nothing server cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame(pub u32);

/// Answers every complete frame at the front of `input`, appending the replies to
/// `out`. Returns how many input bytes were consumed (whole frames only).
pub fn answer_frames(input: &[u8], out: &mut Vec<u8>) -> Result<usize, BadFrame> {
    let mut at = 0;
    while let Some(word) = input.get(at..at + LEN_WORD) {
        let len = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        let body = (len as usize).wrapping_sub(LEN_WORD);
        if (len as usize) < EMPTY_FRAME_LEN || body > MESSAGE_MAX {
            return Err(BadFrame(len));
        }
        let Some(frame) = input.get(at..at + len as usize) else {
            break;
        };
        let mut header = [0u8; 24];
        header.copy_from_slice(&frame[LEN_WORD..EMPTY_FRAME_LEN]);
        out.extend_from_slice(&success_reply(&header));
        at += len as usize;
    }
    Ok(at)
}

/// Serves `socket` until the process is killed or `lifetime` passes.
pub fn serve(socket: &Path, lifetime: Option<std::time::Duration>) -> Result<()> {
    let _ = std::fs::remove_file(socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("build runtime"))?;
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let listener = UnixListener::bind(socket)
            .map_err(BenchError::io(format!("bind {}", socket.display())))?;
        match lifetime {
            Some(d) => match tokio::time::timeout(d, accept_loop(listener)).await {
                Ok(r) => r,
                Err(_elapsed) => Ok(()),
            },
            None => accept_loop(listener).await,
        }
    })
}

async fn accept_loop(listener: UnixListener) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await.map_err(BenchError::io("accept"))?;
        tokio::task::spawn_local(connection(stream));
    }
}

/// Serves one connection; any error or bad frame just ends it.
async fn connection(mut stream: UnixStream) {
    let mut input = vec![0u8; 4096];
    let mut have = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        if have == input.len() {
            input.resize(input.len() * 2, 0);
        }
        let n = match stream.read(&mut input[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        out.clear();
        let Ok(used) = answer_frames(&input[..have], &mut out) else {
            return;
        };
        input.copy_within(used..have, 0);
        have -= used;
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::CallFrame;

    #[test]
    fn answers_whole_frames_and_keeps_partial_ones() {
        let mut a = CallFrame::register(1, 100_001);
        a.set_serial(5);
        let mut b = CallFrame::acquire("", "/x", 0);
        b.set_serial(6);
        let mut input = a.bytes().to_vec();
        input.extend_from_slice(b.bytes());
        let cut = input.len() - 3;
        let mut out = Vec::new();
        let used = answer_frames(&input[..cut], &mut out).expect("valid frames");
        assert_eq!(used, a.bytes().len());
        assert_eq!(out.len(), 28);
        assert_eq!(&out[20..24], &5u32.to_be_bytes());
        out.clear();
        let used = answer_frames(&input[used..], &mut out).expect("valid frames");
        assert_eq!(used, b.bytes().len());
        assert_eq!(&out[12..16], &6u32.to_be_bytes(), "proc echoed");
        assert_eq!(&out[16..20], &1u32.to_be_bytes(), "type REPLY");
    }

    #[test]
    fn short_length_word_waits_and_bad_lengths_fail() {
        let mut out = Vec::new();
        assert_eq!(answer_frames(&[0, 0], &mut out), Ok(0));
        assert_eq!(answer_frames(&[0, 0, 0, 27], &mut out), Err(BadFrame(27)));
        assert_eq!(answer_frames(&[0, 0, 0, 3], &mut out), Err(BadFrame(3)));
        assert_eq!(answer_frames(&[0xff; 4], &mut out), Err(BadFrame(u32::MAX)));
        assert!(out.is_empty());
    }

    #[test]
    fn serves_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("vmlock-bench-null-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let sock = dir.join("sock");
        let s2 = sock.clone();
        let server =
            std::thread::spawn(move || serve(&s2, Some(std::time::Duration::from_secs(5))));
        let mut conn =
            crate::target::wait_for_socket(&sock, std::time::Duration::from_secs(5), || Ok(()))
                .expect("server up");
        for _ in 0..3 {
            let mut f = CallFrame::acquire("", "/nothing", 0);
            assert_eq!(
                conn.call(&mut f).expect("reply"),
                crate::frames::Outcome::Ok
            );
        }
        drop(conn);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
