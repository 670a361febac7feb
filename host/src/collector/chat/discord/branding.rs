//! The branding example on Discord: a taskback `{action: set-icon | set-banner, asset}`
//! becomes `PATCH /guilds/{guild}` with the asset as a data URI. The asset is a path under
//! the `branding.assets` directory (never outside it), at most [`MAX_ASSET`] bytes, and must
//! be a PNG, JPEG, GIF or WebP image (Discord takes nothing else).

use std::path::{Component, Path};

use base64::Engine as _;

use crate::config::Branding;

/// Largest asset sent (Discord's own limit for guild images is 10 MiB).
pub const MAX_ASSET: u64 = 10 << 20;

/// The `PATCH /guilds/{id}` body for `action` with `asset`, or why there is none.
pub fn change(branding: &Branding, action: &str, asset: &str) -> Result<serde_json::Value, String> {
    let field = match action {
        "set-icon" => "icon",
        "set-banner" => "banner",
        other => return Err(format!("unknown branding action `{}`", crate::text::for_terminal(other))),
    };
    let bytes = read(&branding.assets, asset)?;
    let Some(mime) = image_type(&bytes) else {
        let shown = crate::text::for_terminal(asset);
        return Err(format!("asset `{shown}` is not a PNG, JPEG, GIF or WebP image"));
    };
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(serde_json::json!({ field: format!("data:{mime};base64,{data}") }))
}

/// Reads `asset` under `root`: a relative path of normal components only, resolving (links
/// included) inside `root`.
fn read(root: &Path, asset: &str) -> Result<Vec<u8>, String> {
    let shown = crate::text::for_terminal(asset);
    let relative = Path::new(asset);
    if asset.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("asset `{shown}` is not a path inside the assets directory"));
    }
    let outside = || format!("asset `{shown}` is not inside the assets directory");
    let root = root.canonicalize().map_err(|e| format!("the assets directory {}: {e}", root.display()))?;
    let file = root.join(relative).canonicalize().map_err(|e| format!("asset `{shown}`: {e}"))?;
    if !file.starts_with(&root) {
        return Err(outside());
    }
    let size = std::fs::metadata(&file).map_err(|e| format!("asset `{shown}`: {e}"))?.len();
    if size > MAX_ASSET {
        return Err(format!("asset `{shown}` is {size} bytes; at most {MAX_ASSET}"));
    }
    std::fs::read(&file).map_err(|e| format!("asset `{shown}`: {e}"))
}

/// The image type by its first bytes.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_become_data_uris_and_nothing_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ev")).unwrap();
        std::fs::write(dir.path().join("ev/icon.png"), b"\x89PNG\r\n\x1a\nrest").unwrap();
        std::fs::write(dir.path().join("ev/banner.txt"), b"not an image").unwrap();
        std::fs::write(dir.path().join("secret.png"), b"\x89PNG").unwrap();
        let branding = Branding { guild: "1".into(), assets: dir.path().join("ev") };
        let body = change(&branding, "set-icon", "icon.png").unwrap();
        assert!(body["icon"].as_str().unwrap().starts_with("data:image/png;base64,iVBORw0KGg"));
        assert!(change(&branding, "set-banner", "banner.txt").unwrap_err().contains("not a PNG"));
        assert!(change(&branding, "set-icon", "../secret.png").unwrap_err().contains("not a path inside"));
        assert!(change(&branding, "set-icon", "/etc/passwd").unwrap_err().contains("not a path inside"));
        assert!(change(&branding, "set-icon", "gone.png").unwrap_err().contains("gone.png"));
        assert!(change(&branding, "set-name", "icon.png").unwrap_err().contains("unknown branding action"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.png"), dir.path().join("ev/link.png")).unwrap();
            assert!(change(&branding, "set-icon", "link.png").unwrap_err().contains("not inside"));
        }
    }
}
