//! A bounded buffer of job output waiting to be uploaded. When a job floods its output
//! faster than it can be sent, the oldest text is dropped and the tail kept, with a marker
//! saying how much was lost.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::job::OutputStream;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Position in the job's log, counting from 0, without gaps even when text was dropped.
    pub seq: u64,
    pub stream: OutputStream,
    pub text: String,
}

#[derive(Debug)]
pub struct LogBuffer {
    chunks: VecDeque<LogChunk>,
    bytes: usize,
    bytes_max: usize,
    next_seq: u64,
    dropped_bytes: u64,
}

impl LogBuffer {
    pub fn new(bytes_max: usize) -> LogBuffer {
        assert!(bytes_max > 0);
        LogBuffer { chunks: VecDeque::new(), bytes: 0, bytes_max, next_seq: 0, dropped_bytes: 0 }
    }

    pub fn push(&mut self, stream: OutputStream, text: &str) {
        let text = if text.len() > self.bytes_max {
            // A single chunk larger than the whole buffer: keep its end.
            let mut cut = text.len() - self.bytes_max;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            self.dropped_bytes += cut as u64;
            &text[cut..]
        } else {
            text
        };
        self.bytes += text.len();
        self.chunks.push_back(LogChunk { seq: 0, stream, text: text.to_string() });
        while self.bytes > self.bytes_max {
            let Some(oldest) = self.chunks.pop_front() else { break };
            self.bytes -= oldest.text.len();
            self.dropped_bytes += oldest.text.len() as u64;
        }
    }

    /// Takes everything buffered, numbered in order. A marker chunk comes first when text
    /// was dropped since the last take.
    pub fn take(&mut self) -> Vec<LogChunk> {
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        if self.dropped_bytes > 0 {
            out.push(
                self.numbered(
                    OutputStream::Stderr,
                    format!("[capex: {} bytes of output dropped]\n", self.dropped_bytes),
                ),
            );
            self.dropped_bytes = 0;
        }
        while let Some(chunk) = self.chunks.pop_front() {
            out.push(self.numbered(chunk.stream, chunk.text));
        }
        self.bytes = 0;
        out
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.dropped_bytes == 0
    }

    fn numbered(&mut self, stream: OutputStream, text: String) -> LogChunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        LogChunk { seq, stream, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_when_flooded() {
        let mut buffer = LogBuffer::new(10);
        buffer.push(OutputStream::Stdout, "aaaa");
        buffer.push(OutputStream::Stdout, "bbbb");
        buffer.push(OutputStream::Stdout, "cccc");
        let chunks = buffer.take();
        assert_eq!(chunks[0].text, "[capex: 4 bytes of output dropped]\n");
        let texts: Vec<&str> = chunks[1..].iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["bbbb", "cccc"]);
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1, 2]);
        buffer.push(OutputStream::Stderr, "0123456789abcdef");
        let chunks = buffer.take();
        assert_eq!(chunks[0].seq, 3);
        assert_eq!(chunks[1].text, "6789abcdef");
        assert!(buffer.is_empty());
    }

    #[test]
    fn never_splits_a_character() {
        let mut buffer = LogBuffer::new(5);
        buffer.push(OutputStream::Stdout, "ééééé");
        let chunks = buffer.take();
        assert!(chunks.iter().all(|c| c.text.is_char_boundary(c.text.len())));
        assert_eq!(chunks.last().unwrap().text, "éé");
    }
}
