//! A lean AMQP client, for one measurement only: what a round trip costs without an I/O
//! thread (a blocking socket in the calling thread, frames encoded and parsed with the
//! `amq-protocol` codec that lapin uses). Enough of AMQP 0-9-1 for an echo: handshake, one
//! channel with publisher confirms, an exclusive queue, a consumer, publish.

use std::io::{Read, Write};
use std::net::TcpStream;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, ProtocolVersion, gen_frame, parse_frame};
use amq_protocol::protocol::{
    AMQPClass, BasicProperties, basic, channel, confirm, connection, queue,
};
use amq_protocol::types::FieldTable;

pub struct Lean {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    pub queue: String,
}

/// A delivered message: its reply-to, correlation id and body.
pub struct Delivered {
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub body: Vec<u8>,
}

const CHANNEL: u16 = 1;

/// The `host:port` of the broker named in `RUNTIME_THREAD_AMQP_URL` (the project's node).
fn broker_address() -> String {
    let url = std::env::var("RUNTIME_THREAD_AMQP_URL").expect("RUNTIME_THREAD_AMQP_URL");
    let after_at = url.rsplit_once('@').map_or(url.as_str(), |(_, rest)| rest);
    after_at.split('/').next().unwrap_or(after_at).to_owned()
}

impl Lean {
    /// Connects as guest, opens channel 1 with confirms, declares an exclusive queue (named
    /// `queue`, or by the server when empty) and consumes it without acknowledgements.
    pub fn connect(queue: &str) -> Lean {
        let stream = TcpStream::connect(broker_address()).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut lean = Lean {
            stream,
            input: Vec::with_capacity(1 << 16),
            output: Vec::with_capacity(1 << 16),
            queue: String::new(),
        };
        lean.send(&[AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1())]);
        let AMQPClass::Connection(connection::AMQPMethod::Start(_)) = lean.method() else {
            panic!("no connection.start");
        };
        let start_ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        };
        lean.call0(connection::AMQPMethod::StartOk(start_ok));
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = lean.method() else {
            panic!("no connection.tune");
        };
        let tune_ok = connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        };
        lean.call0(connection::AMQPMethod::TuneOk(tune_ok));
        lean.call0(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }));
        lean.method(); // open-ok
        lean.call(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )));
        lean.method(); // open-ok
        lean.call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        )));
        lean.method(); // select-ok
        lean.call(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: queue.into(),
                passive: false,
                durable: false,
                exclusive: true,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )));
        let AMQPClass::Queue(queue::AMQPMethod::DeclareOk(declared)) = lean.method() else {
            panic!("no queue.declare-ok");
        };
        lean.queue = declared.queue.to_string();
        let consume = basic::Consume {
            queue: lean.queue.as_str().into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        lean.call(AMQPClass::Basic(basic::AMQPMethod::Consume(consume)));
        lean.method(); // consume-ok
        lean
    }

    /// Publishes `body` to `routing_key` on the default exchange, in one write.
    pub fn publish(&mut self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        self.publish_to("", routing_key, body, properties);
    }

    /// Publishes `body` to `routing_key` on `exchange`, in one write.
    pub fn publish_to(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let publish = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        };
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        };
        self.send(&[
            AMQPFrame::Method(
                CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
            ),
            AMQPFrame::Header(CHANNEL, header),
            AMQPFrame::Body(CHANNEL, body.to_vec()),
        ]);
    }

    /// Reads frames until a delivery (skipping confirms) and returns it; counts the confirms
    /// seen on the way.
    pub fn next_delivery(&mut self, confirms: &mut u64) -> Delivered {
        loop {
            match self.frame() {
                AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(_))) => *confirms += 1,
                AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(_))) => {
                    let AMQPFrame::Header(_, header) = self.frame() else {
                        panic!("no content header");
                    };
                    let mut body = Vec::with_capacity(header.body_size as usize);
                    while (body.len() as u64) < header.body_size {
                        let AMQPFrame::Body(_, part) = self.frame() else {
                            panic!("no content body");
                        };
                        body.extend_from_slice(&part);
                    }
                    let properties = &header.properties;
                    return Delivered {
                        reply_to: properties.reply_to().as_ref().map(|s| s.to_string()),
                        correlation_id: (properties.correlation_id().as_ref())
                            .map(|s| s.to_string()),
                        body,
                    };
                }
                AMQPFrame::Heartbeat => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads frames until `confirms` reaches `wanted`.
    pub fn await_confirms(&mut self, confirms: &mut u64, wanted: u64) {
        while *confirms < wanted {
            match self.frame() {
                AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(_))) => *confirms += 1,
                AMQPFrame::Heartbeat => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    fn call0(&mut self, method: connection::AMQPMethod) {
        self.send(&[AMQPFrame::Method(0, AMQPClass::Connection(method))]);
    }

    fn call(&mut self, method: AMQPClass) {
        self.send(&[AMQPFrame::Method(CHANNEL, method)]);
    }

    fn method(&mut self) -> AMQPClass {
        match self.frame() {
            AMQPFrame::Method(_, method) => method,
            other => panic!("expected a method, got {other:?}"),
        }
    }

    fn send(&mut self, frames: &[AMQPFrame]) {
        let mut output = std::mem::take(&mut self.output);
        output.clear();
        for frame in frames {
            output = cookie_factory::r#gen(gen_frame(frame), output).unwrap().0;
        }
        self.stream.write_all(&output).unwrap();
        self.output = output;
    }

    fn frame(&mut self) -> AMQPFrame {
        loop {
            match parse_frame(self.input.as_slice()) {
                Ok((rest, frame)) => {
                    let used = self.input.len() - rest.len();
                    self.input.drain(..used);
                    return frame;
                }
                Err(error) if error.is_incomplete() => {}
                Err(error) => panic!("cannot parse a frame: {error:?}"),
            }
            let mut chunk = [0u8; 1 << 16];
            let read = self.stream.read(&mut chunk).unwrap();
            assert!(read > 0, "the broker closed the connection");
            self.input.extend_from_slice(&chunk[..read]);
        }
    }
}
