//! Which wire a server speaks: Kong reads it from the plugin's dump
//! (`"Protocol"`) and speaks it on every connection to the socket.

/// The plugin wire of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// MessagePack-RPC (docs/protocol.md), Kong's default.
    MsgPack,
    /// Length-prefixed protobuf messages, one connection per event (docs/protobuf.md).
    ProtoBuf,
}

impl Protocol {
    /// `msgpack` / `protobuf`, or the dump's spelling (`MsgPack:1`, `ProtoBuf:1`).
    pub fn parse(name: &str) -> Option<Protocol> {
        match name.to_ascii_lowercase().as_str() {
            "msgpack" | "msgpack:1" => Some(Protocol::MsgPack),
            "protobuf" | "protobuf:1" => Some(Protocol::ProtoBuf),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_parse() {
        assert_eq!(Protocol::parse("protobuf"), Some(Protocol::ProtoBuf));
        assert_eq!(Protocol::parse("ProtoBuf:1"), Some(Protocol::ProtoBuf));
        assert_eq!(Protocol::parse("MsgPack:1"), Some(Protocol::MsgPack));
        assert_eq!(Protocol::parse("json"), None);
    }
}
