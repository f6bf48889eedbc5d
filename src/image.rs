//! The base image, built offline from host files.

/// `stockade/base:<version>`.
pub fn base_image_ref() -> String {
    format!("stockade/base:{}", env!("CARGO_PKG_VERSION"))
}
