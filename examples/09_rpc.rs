//! 09 · RPC between two parts of one program.
//!
//! A remote procedure call is a request with a name on it: one part of a program subscribes
//! under an identifier, another sends it a message and waits for the answer. Both sides only share
//! a communicator, not types or threads, so the same code works when, later, the two parts live
//! in different processes behind a broker. Here the in-process broker is used from plain
//! synchronous code through a `SyncCommunicator`, which runs everything on a runtime thread.
//!
//! Run it: `cargo run --example 09_rpc`

use std::time::Duration;

use runtime_thread::messaging::{
    Communicator, Error, Handler, Response, SyncCommunicator, Value, from_value, to_value,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Quote {
    item: String,
    quantity: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let comm = SyncCommunicator::local()?;

    // The server side: a plain closure. Messages are JSON values; typed data goes through serde.
    comm.add_rpc_subscriber(
        "pricing",
        Handler::sync(|message: Value| -> Result<Value, Error> {
            let quote: Quote = from_value(message)?;
            let price = 2.5 * f64::from(quote.quantity);
            to_value(&serde_json::json!({ "item": quote.item, "price": price }))
        }),
    )
    .wait()?;

    // The client side: send, then block until the answer comes back.
    let request = to_value(&Quote {
        item: "bolt".into(),
        quantity: 12,
    })?;
    let answer = comm.rpc_send("pricing", request).wait()?;
    println!("pricing answered {answer}");

    // An answer can come later: the handler returns at once and the caller still sees the value.
    comm.add_rpc_subscriber(
        "slow",
        Handler::sync(|_| {
            Response::later(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "worth the wait"
            })
        }),
    )
    .wait()?;
    println!(
        "slow answered {}",
        comm.rpc_send("slow", Value::Null).wait()?
    );

    // What can go wrong is an error value, never a hang:
    let nobody = comm.rpc_send("nobody", Value::Null).wait();
    println!("sending to nobody: {}", nobody.unwrap_err());
    let bad = comm
        .rpc_send("pricing", serde_json::json!({"item": 5}))
        .wait();
    println!("a bad request: {}", bad.unwrap_err());
    comm.add_rpc_subscriber(
        "asleep",
        Handler::from_async(|_| futures::future::pending::<Value>()),
    )
    .wait()?;
    let timed_out = comm
        .rpc_send_with("asleep", Value::Null, Some(Duration::from_millis(50)))
        .wait();
    println!("a server that never answers: {}", timed_out.unwrap_err());

    comm.close();
    Ok(())
}
