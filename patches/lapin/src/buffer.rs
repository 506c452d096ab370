use crate::parsing::ParsingContext;
use amq_protocol::frame::{BackToTheBuffer, GenError, GenResult, WriteContext};
use futures_io::{AsyncRead, AsyncWrite};
use std::{
    cmp,
    io::{self, IoSlice, IoSliceMut},
    pin::Pin,
    task::{Context, Poll},
};

#[derive(Debug, PartialEq, Clone)]
pub(crate) struct Buffer {
    memory: Vec<u8>,
    capacity: usize,
    position: usize,
    end: usize,
    available_data: usize,
}

// fanout-bridge patch: a checkpoint records the amount of data too, so a
// rollback is exact. Computed from `end` alone, a rollback after a partial
// write that filled an empty buffer all the way round (`end` back where it
// was) did nothing, and the cut frame was then sent: the broker closed the
// connection (invalid_frame_end_marker). With lapin's former 4 MiB buffers
// only a header frame over 4 MiB hit it; with buffers sized to the traffic
// (io_loop.rs), any frame bigger than the buffer did.
pub(crate) struct Checkpoint {
    end: usize,
    available_data: usize,
}

impl Buffer {
    pub(crate) fn with_capacity(capacity: usize) -> Buffer {
        Buffer {
            memory: vec![0; capacity],
            capacity,
            position: 0,
            end: 0,
            available_data: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.position = 0;
        self.end = 0;
        self.available_data = 0;
    }

    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            end: self.end,
            available_data: self.available_data,
        }
    }

    // Only `fill` and writes move `end` and `available_data` between a
    // checkpoint and its rollback (both on the I/O loop's thread; `consume`
    // runs before or after a whole serialisation), so restoring both is exact
    // in either direction.
    pub(crate) fn rollback(&mut self, checkpoint: Checkpoint) {
        self.end = checkpoint.end;
        self.available_data = checkpoint.available_data;
    }

    pub(crate) fn grow(&mut self, new_size: usize) -> bool {
        if self.capacity >= new_size {
            return false;
        }

        let old_capacity = self.capacity;
        let growth = new_size - old_capacity;

        self.memory.resize(new_size, 0);
        self.capacity = new_size;

        if self.end <= self.position && self.available_data > 0 {
            // We have data and the "tail" was at the beginning of the buffer.
            // We need to move it in the new end.
            let (old, new) = self.memory.split_at_mut(old_capacity);
            if self.end < growth {
                // There is enough room in the new end for this whole "tail".
                // (fanout-bridge patch: `new` was used whole, so this panicked
                // on any tail shorter than the growth.)
                new[..self.end].copy_from_slice(&old[..self.end]);
                self.end += old_capacity;
            } else {
                // Fill the new end with as much data as we can.
                new.copy_from_slice(&old[..growth]);
                // We still have [growth..old_end] to move into [0..new_end]
                // copy_within handles the overlap correctly, if any.
                self.memory.copy_within(growth..self.end, 0);
                // We also update the end pointer to the right location.
                self.end -= growth;
            }
        }

        true
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn available_data(&self) -> usize {
        self.available_data
    }

    pub(crate) fn available_space(&self) -> usize {
        self.capacity - self.available_data
    }

    pub(crate) fn consume(&mut self, count: usize) -> usize {
        let cnt = cmp::min(count, self.available_data());
        self.position += cnt;
        self.position %= self.capacity;
        self.available_data -= cnt;
        cnt
    }

    pub(crate) fn fill(&mut self, count: usize) -> usize {
        let cnt = cmp::min(count, self.available_space());
        self.end += cnt;
        self.end %= self.capacity;
        self.available_data += cnt;
        cnt
    }

    pub(crate) fn poll_write_to<T: AsyncWrite + ?Sized>(
        &self,
        cx: &mut Context<'_>,
        writer: Pin<&mut T>,
    ) -> Poll<io::Result<usize>> {
        if self.available_data() == 0 {
            Poll::Ready(Ok(0))
        } else if self.end > self.position {
            writer.poll_write(cx, &self.memory[self.position..self.end])
        } else {
            writer.poll_write_vectored(
                cx,
                &[
                    IoSlice::new(&self.memory[self.position..]),
                    IoSlice::new(&self.memory[..self.end]),
                ],
            )
        }
    }

    pub(crate) fn poll_read_from<T: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut T>,
    ) -> Poll<io::Result<usize>> {
        if self.available_space() == 0 {
            Poll::Ready(Ok(0))
        } else if self.end >= self.position {
            let (start, end) = self.memory.split_at_mut(self.end);
            reader.poll_read_vectored(
                cx,
                &mut [
                    IoSliceMut::new(&mut *end),
                    IoSliceMut::new(&mut start[..self.position]),
                ][..],
            )
        } else {
            reader.poll_read(cx, &mut self.memory[self.end..self.position])
        }
    }

    pub(crate) fn offset(&self, buf: ParsingContext<'_>) -> usize {
        let dataptr = self.memory[self.position..].as_ptr() as usize;
        let bufptr = buf.as_ptr() as usize;

        if dataptr < bufptr {
            bufptr - dataptr
        } else {
            let start = &self.memory[..0];
            let startptr = start.as_ptr() as usize;
            bufptr + self.capacity - self.position - startptr
        }
    }

    pub(crate) fn parsing_context(&self) -> ParsingContext<'_> {
        if self.available_data() == 0 {
            self.memory[self.end..self.end].into()
        } else if self.end > self.position {
            self.memory[self.position..self.end].into()
        } else {
            [&self.memory[self.position..], &self.memory[..self.end]].into()
        }
    }
}

impl io::Write for &mut Buffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let amt = if self.available_space() == 0 {
            0
        } else if self.end >= self.position {
            let mut space = &mut self.memory[self.end..];
            let mut amt = space.write(data)?;
            if amt == self.capacity - self.end {
                let mut space = &mut self.memory[..self.position];
                amt += space.write(&data[amt..])?;
            }
            amt
        } else {
            let mut space = &mut self.memory[self.end..self.position];
            space.write(data)?
        };
        self.fill(amt);
        Ok(amt)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BackToTheBuffer for &mut Buffer {
    fn reserve_write_use<
        Tmp,
        Gen: Fn(WriteContext<Self>) -> Result<(WriteContext<Self>, Tmp), GenError>,
        Before: Fn(WriteContext<Self>, Tmp) -> GenResult<Self>,
    >(
        s: WriteContext<Self>,
        reserved: usize,
        generator: &Gen,
        before: &Before,
    ) -> Result<WriteContext<Self>, GenError> {
        if s.write.available_space() < reserved {
            return Err(GenError::BufferTooSmall(
                reserved - s.write.available_space(),
            ));
        }
        let start = s.write.checkpoint();
        s.write.fill(reserved);
        generator(s).and_then(|(s, tmp)| {
            let end = s.write.checkpoint();
            s.write.rollback(start);
            #[allow(clippy::manual_inspect)]
            before(s, tmp).map(|s| {
                s.write.rollback(end);
                s
            })
        })
    }
}

// fanout-bridge patch: tests of the exact rollback.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn contents(buffer: &Buffer) -> Vec<u8> {
        (0..buffer.available_data)
            .map(|i| buffer.memory[(buffer.position + i) % buffer.capacity])
            .collect()
    }

    #[test]
    fn a_partial_write_that_fills_an_empty_buffer_rolls_back_to_empty() {
        let mut buffer = Buffer::with_capacity(8);
        // Move the ends to the middle, then empty it.
        (&mut buffer).write_all(b"abc").unwrap();
        buffer.consume(3);
        let checkpoint = buffer.checkpoint();
        let written = (&mut buffer).write(b"0123456789").unwrap();
        assert_eq!(written, 8);
        assert_eq!(buffer.available_space(), 0);
        buffer.rollback(checkpoint);
        assert_eq!(buffer.available_data(), 0);
        assert_eq!(buffer.available_space(), 8);
    }

    #[test]
    fn a_partial_write_that_fills_a_wrapped_buffer_rolls_back_to_what_it_held() {
        let mut buffer = Buffer::with_capacity(8);
        (&mut buffer).write_all(b"abcdef").unwrap();
        buffer.consume(4);
        let checkpoint = buffer.checkpoint();
        (&mut buffer).write(b"0123456789").unwrap();
        assert_eq!(buffer.available_space(), 0);
        buffer.rollback(checkpoint);
        assert_eq!(buffer.available_data(), 2);
        assert_eq!(contents(&buffer), b"ef");
    }

    #[test]
    fn a_rollback_forward_restores_what_was_written_after_the_checkpoint() {
        let mut buffer = Buffer::with_capacity(8);
        let start = buffer.checkpoint();
        buffer.fill(2);
        (&mut buffer).write_all(b"xyz").unwrap();
        let end = buffer.checkpoint();
        buffer.rollback(start);
        (&mut buffer).write_all(b"LN").unwrap();
        buffer.rollback(end);
        assert_eq!(contents(&buffer), b"LNxyz");
    }

    #[test]
    fn growing_a_buffer_whose_tail_wrapped_a_little_keeps_its_data_in_order() {
        let mut buffer = Buffer::with_capacity(8);
        (&mut buffer).write_all(b"abcdef").unwrap();
        buffer.consume(5);
        (&mut buffer).write_all(b"ghijk").unwrap();
        assert!(buffer.grow(16));
        assert_eq!(buffer.capacity(), 16);
        assert_eq!(contents(&buffer), b"fghijk");
    }

    #[test]
    fn growing_a_buffer_whose_tail_wrapped_past_the_growth_keeps_its_data_in_order() {
        let mut buffer = Buffer::with_capacity(8);
        (&mut buffer).write_all(b"abcdefg").unwrap();
        buffer.consume(7);
        (&mut buffer).write_all(b"hijklmn").unwrap();
        assert!(buffer.grow(10));
        assert_eq!(contents(&buffer), b"hijklmn");
        (&mut buffer).write_all(b"opq").unwrap();
        assert_eq!(contents(&buffer), b"hijklmnopq");
    }
}
