//! Sync tokens: a device's position in the log, signed for that device.
//!
//! A token is opaque to clients. It carries a position, a feed epoch (the version of the plugin
//! that shaped the feed; 0: none) and a tombstone mark (see [`Cursor::tombstone_mark`]), and a
//! MAC over those and the (user_id, device_id, app_type) it was issued to, keyed with the
//! server's token secret. A forged token, or one presented by another user, device or
//! app_type, fails verification. Tokens of the first version, without a mark, still verify.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::positions::DeviceKey;

const VERSION: u8 = 2;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 8 + 8 + 8;
/// Version 1 had no tombstone mark.
const V1_BODY_LEN: usize = 1 + 8 + 8;

/// Where a device is in its feed: what a token says, and what the server keeps of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The id of the last event the device has been given or deliberately skipped.
    pub position: i64,
    /// The version of the plugin that shaped its feed (0: none).
    pub epoch: u64,
    /// How far compaction had gone when the device began reading the log from its start: the
    /// history of a deletion up to here was folded into it before the device could read it, so
    /// the device cannot hold its record. A deletion dropped after this and after the device's
    /// position may be one it needed (0: any may be).
    pub tombstone_mark: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the sync token is malformed")]
    Malformed,
    #[error("the sync token was not issued to this user, device and app_type, or was altered")]
    BadSignature,
}

#[derive(Clone)]
pub struct TokenKey {
    mac: Hmac<Sha256>,
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> TokenKey {
        // HMAC accepts keys of any length.
        let mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        TokenKey { mac }
    }

    fn tag(&self, device: &DeviceKey, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.update(&device.user_id.to_be_bytes());
        for part in [device.device_id.as_bytes(), device.app_type.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    pub fn issue(&self, device: &DeviceKey, cursor: Cursor) -> String {
        let mut bytes = Vec::with_capacity(BODY_LEN + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&cursor.position.to_be_bytes());
        bytes.extend_from_slice(&cursor.epoch.to_be_bytes());
        bytes.extend_from_slice(&cursor.tombstone_mark.to_be_bytes());
        let tag = self.tag(device, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn verify(&self, device: &DeviceKey, token: &str) -> Result<Cursor, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        let body_len = match bytes.first() {
            Some(&VERSION) => BODY_LEN,
            Some(1) => V1_BODY_LEN,
            _ => return Err(TokenError::Malformed),
        };
        if bytes.len() != body_len + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = bytes.split_at(body_len);
        let expected = self.tag(device, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(TokenError::BadSignature);
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&body[1..9]);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&body[9..17]);
        let position = i64::from_be_bytes(position);
        let mut mark = [0u8; 8];
        if body_len == BODY_LEN {
            mark.copy_from_slice(&body[17..25]);
        }
        let tombstone_mark = i64::from_be_bytes(mark);
        if position < 0 || tombstone_mark < 0 {
            return Err(TokenError::Malformed);
        }
        Ok(Cursor {
            position,
            epoch: u64::from_be_bytes(epoch),
            tombstone_mark,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(user_id: i64, device_id: &str, app_type: &str) -> DeviceKey {
        DeviceKey {
            user_id,
            device_id: device_id.into(),
            app_type: app_type.into(),
        }
    }

    #[test]
    fn a_token_verifies_only_for_its_device() {
        let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
        let me = device(5, "android-1", "sales_app");
        let cursor = Cursor {
            position: 1234,
            epoch: 7,
            tombstone_mark: 99,
        };
        let token = key.issue(&me, cursor);
        assert_eq!(key.verify(&me, &token), Ok(cursor));
        for other in [
            device(6, "android-1", "sales_app"),
            device(5, "android-2", "sales_app"),
            device(5, "android-1", "manager_app"),
        ] {
            assert_eq!(key.verify(&other, &token), Err(TokenError::BadSignature));
        }
        let other_key = TokenKey::new(b"another secret, just as long....");
        assert_eq!(other_key.verify(&me, &token), Err(TokenError::BadSignature));
    }

    #[test]
    fn altered_tokens_are_refused() {
        let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
        let me = device(5, "android-1", "sales_app");
        let token = key.issue(
            &me,
            Cursor {
                position: 10,
                ..Cursor::default()
            },
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        bytes[8] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(key.verify(&me, &forged), Err(TokenError::BadSignature));
        assert_eq!(key.verify(&me, "not a token"), Err(TokenError::Malformed));
        assert_eq!(key.verify(&me, ""), Err(TokenError::Malformed));
    }

    #[test]
    fn first_version_tokens_still_verify_without_a_mark() {
        let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
        let me = device(5, "android-1", "sales_app");
        let mut body = vec![1u8];
        body.extend_from_slice(&77i64.to_be_bytes());
        body.extend_from_slice(&3u64.to_be_bytes());
        let tag = key.tag(&me, &body);
        body.extend_from_slice(&tag);
        let token = URL_SAFE_NO_PAD.encode(&body);
        assert_eq!(
            key.verify(&me, &token),
            Ok(Cursor {
                position: 77,
                epoch: 3,
                tombstone_mark: 0
            })
        );
    }
}
