//! What a completion is about, packed into its 64-bit `user_data`:
//! operation kind (8 bits) | connection generation (24) | slab key (32).

/// Generations wrap within 24 bits.
pub(crate) const GENERATION_MASK: u32 = 0x00FF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Signal = 4,
    Cancel = 5,
    Close = 6,
    Inbox = 7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserData(pub(crate) u64);

/// One completion, copied out of the ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) data: UserData,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl UserData {
    pub(crate) fn new(op: Op, key: usize, generation: u32) -> Self {
        debug_assert!(key <= u32::MAX as usize);
        Self((op as u64) << 56 | u64::from(generation & GENERATION_MASK) << 32 | key as u64)
    }

    pub(crate) fn op(self) -> Op {
        match (self.0 >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Signal,
            5 => Op::Cancel,
            7 => Op::Inbox,
            _ => Op::Close,
        }
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32 & GENERATION_MASK
    }

    pub(crate) fn key(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (op, key, generation) in [
            (Op::Recv, 0, 0),
            (Op::Send, 123_456, 0xFF_FFFF),
            (Op::Accept, 7, 42),
        ] {
            let d = UserData::new(op, key, generation);
            assert_eq!((d.op(), d.key(), d.generation()), (op, key, generation));
        }
    }
}
