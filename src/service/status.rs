//! DICOM status values (PS3.7 Annex C) as a type, so no one writes raw hex. DIMSE responses
//! carry them; STOW-RS reports them as Failure Reasons (PS3.18 10.5.3).

/// A DIMSE response status. Codes are service-specific, so two variants may share a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// More responses follow (C-FIND, C-MOVE, C-GET).
    Pending,
    /// Operation stopped by C-CANCEL.
    Cancel,
    /// Refused: the SOP class is not supported on this presentation context.
    SopClassNotSupported,
    /// Refused: the calling AE is not allowed this service.
    NotAuthorized,
    /// Refused: a command element is missing or wrong.
    MissingAttribute,
    /// The DIMSE command is not one we implement.
    UnrecognizedOperation,
    /// Refused: out of resources (e.g. disk full) while storing.
    OutOfResources,
    /// Error: the data set does not match the SOP class or the command.
    DataSetDoesNotMatchSopClass,
    /// Error: the data set cannot be parsed.
    CannotUnderstand,
    /// Failure: processing failed for a reason of our own (I/O, database).
    ProcessingFailure,
    /// C-MOVE refused: the Move Destination is not a known AE title.
    MoveDestinationUnknown,
    /// C-MOVE/C-GET refused: no sub-operation could be performed (destination down, nothing
    /// it accepts).
    SubOperationsRefused,
    /// C-MOVE/C-GET warning: sub-operations complete, one or more failed or had warnings.
    SubOperationsWithFailures,
    /// N-ACTION refused: the Requested SOP Instance is not one we know (Storage Commitment
    /// has one well-known instance).
    NoSuchSopInstance,
    /// N-ACTION refused: the Action Type ID is not one the SOP class defines.
    NoSuchActionType,
    /// N-ACTION refused: an attribute value is invalid (e.g. an empty Referenced SOP
    /// Sequence).
    InvalidArgumentValue,
    /// C-STORE warning statuses a destination may answer (coercion, elements discarded).
    StoreWarning(u16),
    /// Any other status a peer answered, kept as received.
    Other(u16),
}

impl Status {
    /// The 16-bit code carried in the Status (0000,0900) element.
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::Pending => 0xFF00,
            Status::Cancel => 0xFE00,
            Status::SopClassNotSupported => 0x0122,
            Status::NotAuthorized => 0x0124,
            Status::MissingAttribute => 0x0120,
            Status::UnrecognizedOperation => 0x0211,
            Status::OutOfResources => 0xA700,
            Status::DataSetDoesNotMatchSopClass => 0xA900,
            Status::CannotUnderstand => 0xC000,
            Status::ProcessingFailure => 0x0110,
            Status::MoveDestinationUnknown => 0xA801,
            Status::SubOperationsRefused => 0xA702,
            Status::SubOperationsWithFailures => 0xB000,
            Status::NoSuchSopInstance => 0x0112,
            Status::NoSuchActionType => 0x0123,
            Status::InvalidArgumentValue => 0x0115,
            Status::StoreWarning(code) | Status::Other(code) => code,
        }
    }

    /// Whether the status ends an operation in failure.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Status::Success
                | Status::Pending
                | Status::Cancel
                | Status::SubOperationsWithFailures
                | Status::StoreWarning(_)
        )
    }

    /// Classifies a C-STORE response status from a peer (PS3.4 B.2.3).
    pub fn from_store_response(code: u16) -> Status {
        match code {
            0x0000 => Status::Success,
            0xB000 | 0xB006 | 0xB007 => Status::StoreWarning(code),
            0x0001 | 0x0107 | 0x0116 => Status::StoreWarning(code),
            other => Status::Other(other),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (0x{:04X})", self, self.code())
    }
}
