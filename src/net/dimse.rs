//! DIMSE message assembly from P-DATA value fragments (PS3.8 Annex E). I/O-free.
//!
//! A message is a command set, split over one or more command fragments, optionally followed
//! by a data set split over data fragments on the same presentation context. Command fragments
//! are collected (they are small and bounded); data fragments are passed on one by one so that
//! large data sets stream to storage instead of gathering in memory.

use dicom_ul::pdu::{PDataValue, PDataValueType};

use super::command::{CommandError, CommandSet};

/// Command sets larger than this are refused: real ones are a few hundred bytes.
pub const MAX_COMMAND_SET_LEN: usize = 64 * 1024;

/// What one fragment completed.
#[derive(Debug)]
pub enum DimseEvent {
    /// A whole command set arrived; if it announces a data set, data fragments follow.
    Command { context_id: u8, command: CommandSet },
    /// A piece of the data set of the current message.
    Data {
        context_id: u8,
        bytes: Vec<u8>,
        last: bool,
    },
}

/// A protocol violation: the association must be aborted.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error("data fragment on context {0} without a command announcing a data set")]
    UnexpectedData(u8),
    #[error("command fragment on context {0} while a data set was expected")]
    UnexpectedCommand(u8),
    #[error("fragment on context {got} while a message on context {expected} is in progress")]
    ContextSwitch { expected: u8, got: u8 },
    #[error("command set larger than {MAX_COMMAND_SET_LEN} bytes")]
    CommandTooLarge,
    #[error("undecodable command set: {0}")]
    Command(#[from] CommandError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Command(u8),
    Data(u8),
}

/// Turns P-DATA values into [`DimseEvent`]s.
#[derive(Debug)]
pub struct MessageAssembler {
    state: State,
    command: Vec<u8>,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        MessageAssembler {
            state: State::Idle,
            command: Vec::new(),
        }
    }
}

impl MessageAssembler {
    /// Whether a message is partly received (a command or its data set).
    pub fn in_message(&self) -> bool {
        self.state != State::Idle
    }

    /// Feeds one fragment. Returns an event when a command completes or data arrives.
    pub fn push(&mut self, pdv: PDataValue) -> Result<Option<DimseEvent>, AssemblyError> {
        let id = pdv.presentation_context_id;
        match (self.state, pdv.value_type) {
            (State::Idle, PDataValueType::Data) => Err(AssemblyError::UnexpectedData(id)),
            (State::Data(_), PDataValueType::Command) => Err(AssemblyError::UnexpectedCommand(id)),
            (State::Command(expected) | State::Data(expected), _) if expected != id => {
                Err(AssemblyError::ContextSwitch { expected, got: id })
            }
            (State::Idle | State::Command(_), PDataValueType::Command) => {
                if self.command.len() + pdv.data.len() > MAX_COMMAND_SET_LEN {
                    return Err(AssemblyError::CommandTooLarge);
                }
                if self.command.is_empty() {
                    self.command = pdv.data;
                } else {
                    self.command.extend_from_slice(&pdv.data);
                }
                if !pdv.is_last {
                    self.state = State::Command(id);
                    return Ok(None);
                }
                let command = CommandSet::decode(&std::mem::take(&mut self.command))?;
                self.state = if command.has_data_set()? {
                    State::Data(id)
                } else {
                    State::Idle
                };
                Ok(Some(DimseEvent::Command {
                    context_id: id,
                    command,
                }))
            }
            (State::Data(_), PDataValueType::Data) => {
                if pdv.is_last {
                    self.state = State::Idle;
                }
                Ok(Some(DimseEvent::Data {
                    context_id: id,
                    bytes: pdv.data,
                    last: pdv.is_last,
                }))
            }
            (State::Command(_), PDataValueType::Data) => Err(AssemblyError::UnexpectedData(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::command::CommandField;

    fn pdv(id: u8, value_type: PDataValueType, last: bool, data: &[u8]) -> PDataValue {
        PDataValue {
            presentation_context_id: id,
            value_type,
            is_last: last,
            data: data.to_vec(),
        }
    }

    #[test]
    fn command_split_over_fragments_then_streamed_data() {
        let cmd = CommandSet::request(CommandField::CStoreRq, 1, "1.2")
            .with_data_set("1.2.3")
            .encode();
        let mut asm = MessageAssembler::default();
        assert!(asm
            .push(pdv(3, PDataValueType::Command, false, &cmd[..10]))
            .unwrap()
            .is_none());
        assert!(asm.in_message());
        let Some(DimseEvent::Command {
            context_id,
            command,
        }) = asm
            .push(pdv(3, PDataValueType::Command, true, &cmd[10..]))
            .unwrap()
        else {
            panic!("expected a command");
        };
        assert_eq!(context_id, 3);
        assert_eq!(command.affected_sop_instance_uid().unwrap(), "1.2.3");
        for (chunk, last) in [(&b"abcd"[..], false), (&b"ef"[..], true)] {
            match asm.push(pdv(3, PDataValueType::Data, last, chunk)).unwrap() {
                Some(DimseEvent::Data { bytes, last: l, .. }) => {
                    assert_eq!(bytes, chunk);
                    assert_eq!(l, last);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!asm.in_message());
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut asm = MessageAssembler::default();
        assert!(matches!(
            asm.push(pdv(1, PDataValueType::Data, true, b"xx")),
            Err(AssemblyError::UnexpectedData(1))
        ));
        let store = CommandSet::request(CommandField::CStoreRq, 1, "1.2")
            .with_data_set("1.2.3")
            .encode();
        let mut asm = MessageAssembler::default();
        asm.push(pdv(1, PDataValueType::Command, true, &store))
            .unwrap();
        assert!(matches!(
            asm.push(pdv(5, PDataValueType::Data, true, b"xx")),
            Err(AssemblyError::ContextSwitch {
                expected: 1,
                got: 5
            })
        ));
        let mut asm = MessageAssembler::default();
        let big = vec![0u8; MAX_COMMAND_SET_LEN + 1];
        assert!(matches!(
            asm.push(pdv(1, PDataValueType::Command, false, &big)),
            Err(AssemblyError::CommandTooLarge)
        ));
    }
}
