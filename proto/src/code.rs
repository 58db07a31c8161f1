//! The stable error codes of the brief: one type for the node, the SDK and
//! the CLI. On the wire a code is its string (`Error.code`); a code is never
//! given a new meaning once shipped, and new ones are appended here.

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $s:literal,)*) => {
        /// An error code clients can match ([`Code::as_str`] is the wire string).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            /// Every code, in the order they were added.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The wire string (the brief's spelling).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $s,)*
                }
            }

            /// The code a wire string names; `None` for one this build does
            /// not know (a newer node's).
            pub fn parse(s: &str) -> Option<Code> {
                match s {
                    $($s => Some(Code::$name),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    BadRequest = "BAD_REQUEST",
    Unauthorized = "UNAUTHORIZED",
    SessionRevoked = "SESSION_REVOKED",
    PhoneNumberInvalid = "PHONE_NUMBER_INVALID",
    PhoneCodeInvalid = "PHONE_CODE_INVALID",
    PhoneCodeExpired = "PHONE_CODE_EXPIRED",
    /// Over a budget; the error says how many seconds to wait.
    FloodWait = "FLOOD_WAIT",
    SignUpRequired = "SIGN_UP_REQUIRED",
    ChatNotFound = "CHAT_NOT_FOUND",
    NotAMember = "NOT_A_MEMBER",
    AdminRequired = "ADMIN_REQUIRED",
    MessageTooLong = "MESSAGE_TOO_LONG",
    MessageNotFound = "MESSAGE_NOT_FOUND",
    EditTimeExpired = "EDIT_TIME_EXPIRED",
    FilePartInvalid = "FILE_PART_INVALID",
    /// The error lists the part numbers still missing.
    FilePartMissing = "FILE_PART_MISSING",
    FileTooBig = "FILE_TOO_BIG",
    FileNotFound = "FILE_NOT_FOUND",
    /// No quorum right now, or no node reached: try again, here or elsewhere.
    Unavailable = "UNAVAILABLE",
    Internal = "INTERNAL",
    MessageAuthorRequired = "MESSAGE_AUTHOR_REQUIRED",
    MediaCaptionTooLong = "MEDIA_CAPTION_TOO_LONG",
    FileHashMismatch = "FILE_HASH_MISMATCH",
    AlreadyLoggedIn = "ALREADY_LOGGED_IN",
    UserIsBlocked = "USER_IS_BLOCKED",
    ChatsTooMuch = "CHATS_TOO_MUCH",
    QuotaExceeded = "QUOTA_EXCEEDED",
    /// The connection did not read its updates and was closed (a close
    /// reason, never a request's answer).
    SlowConsumer = "SLOW_CONSUMER",
}

impl Code {
    /// Whether the same request may succeed later or on another node: the
    /// one place this is decided.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Code::Unavailable | Code::FloodWait)
    }
}

impl Code {
    /// A gRPC status carrying this code: the status code peers branch on
    /// (`UNAVAILABLE` for retryable answers), `"CODE: message"`, and the
    /// code alone in the `courier-code` metadata.
    pub fn status(self, message: impl fmt::Display) -> tonic::Status {
        let grpc = match self {
            Code::Unavailable => tonic::Code::Unavailable,
            Code::BadRequest => tonic::Code::InvalidArgument,
            Code::Unauthorized => tonic::Code::PermissionDenied,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(grpc, format!("{self}: {message}"));
        status.metadata_mut().insert("courier-code", tonic::metadata::MetadataValue::from_static(self.as_str()));
        status
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string_and_strings_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{c}");
        }
        assert_eq!(Code::parse("NOT_A_CODE_YET"), None);
    }

    #[test]
    fn only_waiting_and_unavailability_are_retryable() {
        let retryable: Vec<Code> = Code::ALL.iter().copied().filter(|c| c.is_retryable()).collect();
        assert_eq!(retryable, vec![Code::FloodWait, Code::Unavailable]);
    }
}
