//! A delivery's slot in `bridge_messages_in_flight`: taken by the supervisor
//! when it spawns the delivery's task, released by the delivery handler just
//! before it settles (a shared tool, so the handler need not know the
//! supervisor).

tokio::task_local! {
    /// The in-flight slot of the delivery this task handles.
    pub(crate) static IN_FLIGHT: InFlight;
}

/// One delivery's count in `bridge_messages_in_flight`, released exactly
/// once: when its ack or nack is about to be sent (after that the broker may
/// already deliver the next message, which must find the slot free), or at
/// the latest when its task ends.
pub struct InFlight {
    gauge: prometheus::IntGauge,
    released: std::sync::atomic::AtomicBool,
}

impl InFlight {
    pub fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight {
            gauge,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn release(&self) {
        if !self
            .released
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.gauge.dec();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release();
    }
}

/// Called by the delivery task just before it sends its ack or nack: the
/// message leaves `bridge_messages_in_flight` then, not after the ack's round
/// trip. A no-op outside a delivery task.
pub fn settling() {
    let _ = IN_FLIGHT.try_with(InFlight::release);
}
