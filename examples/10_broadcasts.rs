//! 10 · Broadcasts with filters.
//!
//! A broadcast goes to everyone who listens, not to one recipient, and nobody answers. Each
//! subscriber says which broadcasts it wants with a filter on the subject and the sender: `*`
//! stands for any run of characters, and a pattern must match the whole string. Several patterns
//! of one kind are alternatives; a subject filter and a sender filter must both pass.
//!
//! Run it: `cargo run --example 10_broadcasts`

use std::sync::mpsc;

use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, SyncCommunicator,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let comm = SyncCommunicator::local()?;
    let (heard_tx, heard) = mpsc::channel();

    let listeners = [
        ("everything", BroadcastFilter::new()),
        ("purchases", BroadcastFilter::new().subject("purchase.*")),
        ("the joneses", BroadcastFilter::new().sender("*.jones")),
        (
            "jones purchases",
            BroadcastFilter::new()
                .subject("purchase.*")
                .sender("*.jones"),
        ),
    ];
    for (name, filter) in listeners {
        let heard_tx = heard_tx.clone();
        comm.add_broadcast_subscriber(
            filter,
            BroadcastHandler::sync(move |message| {
                let _ = heard_tx.send(format!(
                    "{name:>16} heard {} from {}",
                    message.subject.unwrap_or_default(),
                    message.sender.unwrap_or_default()
                ));
            }),
        )
        .wait()?;
    }

    let sends = [
        ("purchase.car", "bob.jones"),
        ("purchase.house", "alice.smith"),
        ("sale.bike", "carol.jones"),
        ("sale.bike", "bob.jonesy"), // "*.jones" must match the whole sender: not this one
    ];
    for (subject, sender) in sends {
        comm.broadcast_send(Broadcast::new("details").subject(subject).sender(sender))
            .wait()?;
    }
    // Everything: 4; purchases: 2; joneses: 2; jones purchases: 1.
    for line in heard.iter().take(9) {
        println!("{line}");
    }
    comm.close();
    Ok(())
}
