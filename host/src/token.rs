//! Sync tokens: a device's position in the log, signed for that device.
//!
//! A token is opaque to clients. It carries a position and a feed epoch (reserved for the
//! version of the plugin that shaped the feed; 0 until plugins set it) and a MAC over those and
//! the (user_id, device_id, app_type) it was issued to, keyed with the server's token secret.
//! A forged token, or one presented by another user, device or app_type, fails verification.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::positions::DeviceKey;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 8 + 8;

/// What a token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub position: i64,
    pub epoch: u64,
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
        let tag = self.tag(device, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn verify(&self, device: &DeviceKey, token: &str) -> Result<Cursor, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != BODY_LEN + TAG_LEN || bytes[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = bytes.split_at(BODY_LEN);
        let expected = self.tag(device, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(TokenError::BadSignature);
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&body[1..9]);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&body[9..17]);
        let position = i64::from_be_bytes(position);
        if position < 0 {
            return Err(TokenError::Malformed);
        }
        Ok(Cursor {
            position,
            epoch: u64::from_be_bytes(epoch),
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
                epoch: 0,
            },
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        bytes[8] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(key.verify(&me, &forged), Err(TokenError::BadSignature));
        assert_eq!(key.verify(&me, "not a token"), Err(TokenError::Malformed));
        assert_eq!(key.verify(&me, ""), Err(TokenError::Malformed));
    }
}
