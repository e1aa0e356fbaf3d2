//! Builders for hand-made histories in unit tests: `write(p, "x", "1", 0, 10)` is process
//! `p` writing `x = 1`, invoked at 0 and completed ok at 10.

use crate::history::{Func, MicroOp, Op, OpType};

pub(crate) fn op(process: u64, kind: OpType, f: Func, invoke: u64, complete: u64) -> Op {
    Op::new(process, kind, f, invoke, complete)
}

pub(crate) fn write(p: u64, key: &str, value: &str, t0: u64, t1: u64) -> Op {
    op(
        p,
        OpType::Ok,
        Func::Write {
            key: key.into(),
            value: value.into(),
            lease: None,
        },
        t0,
        t1,
    )
}

pub(crate) fn write_lease(p: u64, key: &str, value: &str, lease: i64, t0: u64, t1: u64) -> Op {
    op(
        p,
        OpType::Ok,
        Func::Write {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        },
        t0,
        t1,
    )
}

pub(crate) fn read(p: u64, key: &str, value: Option<&str>, t0: u64, t1: u64) -> Op {
    op(
        p,
        OpType::Ok,
        Func::Read {
            key: key.into(),
            value: value.map(Into::into),
        },
        t0,
        t1,
    )
}

pub(crate) fn delete(p: u64, key: &str, t0: u64, t1: u64) -> Op {
    op(
        p,
        OpType::Ok,
        Func::Delete {
            key: key.into(),
            deleted: None,
        },
        t0,
        t1,
    )
}

pub(crate) fn cas(
    p: u64,
    kind: OpType,
    key: &str,
    expected: Option<&str>,
    value: &str,
    t0: u64,
    t1: u64,
) -> Op {
    let f = Func::Cas {
        key: key.into(),
        expected: expected.map(Into::into),
        value: value.into(),
    };
    op(p, kind, f, t0, t1)
}

/// Returns `op` with its type replaced.
pub(crate) fn as_kind(mut op: Op, kind: OpType) -> Op {
    op.kind = kind;
    op
}

pub(crate) fn append(key: &str, value: i64) -> MicroOp {
    MicroOp::Append {
        key: key.into(),
        value,
    }
}

pub(crate) fn r(key: &str, value: &[i64]) -> MicroOp {
    MicroOp::R {
        key: key.into(),
        value: Some(value.to_vec()),
    }
}

pub(crate) fn txn(p: u64, kind: OpType, ops: Vec<MicroOp>, t0: u64, t1: u64) -> Op {
    op(p, kind, Func::Txn { ops }, t0, t1)
}

/// A tiny deterministic generator (a 64-bit LCG) so generated histories need no `rand`.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
