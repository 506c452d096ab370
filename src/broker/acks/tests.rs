use super::*;

fn state(slots: &[(u64, bool)]) -> (State, Vec<oneshot::Receiver<AckResult>>) {
    let mut rxs = Vec::new();
    let mut unsettled = BTreeMap::new();
    for &(tag, ready) in slots {
        let slot = if ready {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            Slot::Ready(tx)
        } else {
            Slot::Held
        };
        unsettled.insert(tag, slot);
    }
    let next = slots.last().map_or(1, |s| s.0 + 1);
    (
        State {
            unsettled,
            next,
            multiple_ok: true,
            closed: false,
        },
        rxs,
    )
}

fn frames(slots: &[(u64, bool)], multiple_ok: bool) -> Vec<(u64, bool, usize)> {
    let (mut st, _rxs) = state(slots);
    st.multiple_ok = multiple_ok;
    take_ready(&mut st)
        .into_iter()
        .map(|f| (f.tag, f.multiple, f.waiters.len()))
        .collect()
}

#[test]
fn a_run_at_the_bottom_is_one_multiple_ack() {
    assert_eq!(
        frames(&[(1, true), (2, true), (3, true), (4, false)], true),
        vec![(3, true, 3)]
    );
}

#[test]
fn never_crosses_a_held_tag() {
    assert_eq!(
        frames(&[(1, false), (2, true), (3, true), (5, true)], true),
        vec![(2, false, 1), (3, false, 1), (5, false, 1)]
    );
    assert_eq!(
        frames(&[(1, true), (2, true), (3, false), (4, true)], true),
        vec![(2, true, 2), (4, false, 1)]
    );
}

#[test]
fn a_single_ready_tag_is_a_plain_ack_and_a_gap_stops_multiple() {
    assert_eq!(frames(&[(7, true)], true), vec![(7, false, 1)]);
    assert_eq!(
        frames(&[(1, true), (2, true)], false),
        vec![(1, false, 1), (2, false, 1)]
    );
}

#[test]
fn a_failed_ack_later_covered_by_a_multiple_ack_is_answered_acked() {
    // 2 is ready above a held 1: it goes out alone, and that frame fails.
    let (mut st, mut rxs) = state(&[(1, false), (2, true), (3, false)]);
    let mut frames = take_ready(&mut st);
    assert_eq!(frames.len(), 1);
    let failed = lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
        lapin::ChannelState::Error,
        "basic.ack",
    ));
    answer(&mut st, frames.remove(0), Err(failed));
    let mut rx2 = rxs.remove(0);
    assert!(
        rx2.try_recv().is_err(),
        "not answered while a later multiple ack may still cover it"
    );
    // Nothing else ready: the failed ack is not sent again alone.
    assert!(take_ready(&mut st).is_empty());

    // 1 and 3 become ready: one multiple ack up to 3 covers 2 too.
    let mut rx1 = ready(&mut st, 1);
    let mut rx3 = ready(&mut st, 3);
    let frames = take_ready(&mut st);
    assert_eq!(
        frames
            .iter()
            .map(|f| (f.tag, f.multiple, f.waiters.len()))
            .collect::<Vec<_>>(),
        vec![(3, true, 3)]
    );
    for frame in frames {
        answer(&mut st, frame, Ok(true));
    }
    for rx in [&mut rx1, &mut rx2, &mut rx3] {
        assert!(matches!(rx.try_recv(), Ok(Ok(true))), "counted acked");
    }
    assert!(st.unsettled.is_empty());
}

#[test]
fn a_failed_ack_above_the_run_waits_and_the_session_end_answers_not_sent() {
    let (mut st, mut rxs) = state(&[(1, false), (2, true)]);
    let frame = take_ready(&mut st).remove(0);
    let failed = lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
        lapin::ChannelState::Error,
        "basic.ack",
    ));
    answer(&mut st, frame, Err(failed));
    // 1 alone is ready: its ack does not reach over 2.
    let _rx1 = ready(&mut st, 1);
    let frames = take_ready(&mut st);
    assert_eq!(
        frames
            .iter()
            .map(|f| (f.tag, f.multiple))
            .collect::<Vec<_>>(),
        vec![(1, false)]
    );
    assert!(matches!(st.unsettled.get(&2), Some(Slot::Failed(_))));
    st.unsettled.clear();
    assert!(rxs.remove(0).try_recv().is_err(), "dropped: not sent");
}

fn ready(st: &mut State, tag: u64) -> oneshot::Receiver<AckResult> {
    let (tx, rx) = oneshot::channel();
    st.unsettled.insert(tag, Slot::Ready(tx));
    rx
}
