//! WADO-RS `/frames/{list}` (PS3.18 10.4.1.1.4): frames of an image instance as
//! `multipart/related; type="application/octet-stream"`, uncompressed little endian, one
//! part a frame. The instance comes through the retrieve service (any tier, transcoded from
//! a compressed syntax as C-MOVE would), read whole: at most [`MAX_INSTANCE`] bytes, and at
//! most [`READS_AT_ONCE`] instances at a time on the node, so memory stays bounded whatever
//! the number of requests.

use bytes::{Bytes, BytesMut};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::sync::SemaphorePermit;

use super::WebError;
use crate::model::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN;
use crate::retrieve::Instances;
use crate::service::{Piece, Retrieval};
use axum::http::StatusCode;

/// Largest instance whose frames are served (its uncompressed data set, read whole).
pub const MAX_INSTANCE: u64 = 256 << 20;
/// Instances read whole for frames at once; more requests wait.
pub const READS_AT_ONCE: usize = 4;
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_AT_ONCE);
/// Most frames one request may name.
const MAX_FRAMES: usize = 4096;

/// The 1-based frame numbers of `/frames/{list}`, or 400.
pub fn frame_list(list: &str) -> Result<Vec<u32>, WebError> {
    let frames: Vec<u32> = list
        .split(',')
        .map(|n| n.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            WebError::bad_request(format!(
                "{list:?} is not a list of frame numbers (1, 2, ...)"
            ))
        })?;
    if frames.is_empty() || frames.len() > MAX_FRAMES {
        return Err(WebError::bad_request(format!(
            "1 to {MAX_FRAMES} frame numbers"
        )));
    }
    Ok(frames)
}

/// 406 unless the Accept header takes uncompressed frames.
pub fn negotiate(accept: Option<&str>) -> Result<(), WebError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut kind = None;
        let mut syntax = None;
        let mut q = 1.0f32;
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"').to_string();
                match key.trim().to_ascii_lowercase().as_str() {
                    "type" => kind = Some(value),
                    "transfer-syntax" => syntax = Some(value),
                    "q" => q = value.parse().unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        let uncompressed = syntax
            .as_deref()
            .is_none_or(|s| s == EXPLICIT_VR_LITTLE_ENDIAN || s == "*");
        q > 0.0
            && uncompressed
            && match media.as_str() {
                "*/*" | "multipart/*" => true,
                "multipart/related" => kind.as_deref().is_none_or(|k| {
                    matches!(k, "application/octet-stream" | "*/*" | "application/*")
                }),
                "application/octet-stream" => true,
                _ => false,
            }
    });
    if acceptable {
        Ok(())
    } else {
        Err(WebError::not_acceptable(format!(
            "frames are sent as multipart/related; type=\"application/octet-stream\" \
             (uncompressed) only, not {accept:?}"
        )))
    }
}

/// Entry `index` of `instances` as an Explicit VR Little Endian data set (decoded from a
/// compressed syntax), read whole, and the permit that counts it among the
/// [`READS_AT_ONCE`] of the node: hold it until done with the bytes.
pub async fn read_whole(
    instances: &Instances,
    index: usize,
) -> Result<(SemaphorePermit<'static>, Bytes), WebError> {
    let read = READS
        .acquire()
        .await
        .map_err(|e| WebError::internal(e.to_string()))?;
    let mut pieces = instances.read(vec![(index, EXPLICIT_VR_LITTLE_ENDIAN.to_string())]);
    let mut data_set = BytesMut::new();
    while let Some(piece) = pieces.recv().await {
        match piece {
            Piece::Start { length, .. } if length > MAX_INSTANCE => {
                return Err(WebError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the instance is {length} bytes uncompressed: images are served up to {MAX_INSTANCE}"),
                ))
            }
            Piece::Start { length, .. } => data_set.reserve(length as usize),
            Piece::Data(bytes) => data_set.extend_from_slice(&bytes),
            Piece::Failed { reason, .. } => return Err(WebError::internal(reason)),
        }
    }
    Ok((read, data_set.freeze()))
}

/// An Explicit VR Little Endian data set as read by [`read_whole`], parsed. Blocking.
pub fn parse(data_set: &[u8]) -> Result<InMemDicomObject, WebError> {
    let ts = TransferSyntaxRegistry
        .get(EXPLICIT_VR_LITTLE_ENDIAN)
        .expect("Explicit VR Little Endian is built in");
    InMemDicomObject::read_dataset_with_ts(data_set, ts)
        .map_err(|e| WebError::internal(format!("cannot parse the instance: {e}")))
}

/// The frames `numbers` of the one instance in `instances`: the multipart content type and
/// body.
pub async fn frames(instances: Instances, numbers: &[u32]) -> Result<(String, Bytes), WebError> {
    let (_read, data_set) = read_whole(&instances, 0).await?;
    let (frame_len, pixels) = tokio::task::spawn_blocking(move || pixel_frames(&data_set))
        .await
        .map_err(|e| WebError::internal(e.to_string()))??;
    let mut parts = Vec::with_capacity(numbers.len());
    for &n in numbers {
        let start = (n as usize - 1) * frame_len;
        let frame = pixels.get(start..start + frame_len).ok_or_else(|| {
            WebError::new(
                StatusCode::NOT_FOUND,
                format!("no frame {n} in this instance"),
            )
        })?;
        parts.push(frame);
    }
    Ok(octet_stream_parts(parts.into_iter()))
}

/// WADO-RS `/bulkdata/{tag}`: the value of top-level attribute `tag` of the one instance in
/// `instances` (Pixel Data native, as for frames), as a one-part multipart body.
pub async fn bulk_data(instances: Instances, tag: Tag) -> Result<(String, Bytes), WebError> {
    let (_read, data_set) = read_whole(&instances, 0).await?;
    let value = tokio::task::spawn_blocking(move || -> Result<Bytes, WebError> {
        let object = parse(&data_set)?;
        let element = object.element_opt(tag).ok().flatten().ok_or_else(|| {
            WebError::new(
                StatusCode::NOT_FOUND,
                format!("no attribute {tag} in this instance"),
            )
        })?;
        let bytes = element.to_bytes().map_err(|_| {
            WebError::new(
                StatusCode::NOT_FOUND,
                format!("{tag} is not a bulk data value"),
            )
        })?;
        Ok(Bytes::from(bytes.into_owned()))
    })
    .await
    .map_err(|e| WebError::internal(e.to_string()))??;
    Ok(octet_stream_parts(std::iter::once(&value[..])))
}

/// A multipart/related body of `application/octet-stream` parts.
fn octet_stream_parts<'a>(parts: impl Iterator<Item = &'a [u8]>) -> (String, Bytes) {
    let boundary = format!("strata-frames-{:x}", std::process::id());
    let mut body = BytesMut::new();
    for part in parts {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/octet-stream; \
                 transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}\r\nContent-Length: {}\r\n\r\n",
                part.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(part);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}");
    (content_type, body.freeze())
}

/// The length of one frame and the native Pixel Data of an Explicit VR Little Endian data
/// set. Blocking.
fn pixel_frames(data_set: &[u8]) -> Result<(usize, Bytes), WebError> {
    let object = parse(data_set)?;
    let number = |tag: Tag| -> Option<usize> {
        let element = object.element_opt(tag).ok().flatten()?;
        element
            .to_int::<i64>()
            .ok()
            .and_then(|v| usize::try_from(v).ok())
    };
    let not_image = || WebError::new(StatusCode::NOT_FOUND, "the instance has no image frames");
    let rows = number(tags::ROWS).ok_or_else(not_image)?;
    let columns = number(tags::COLUMNS).ok_or_else(not_image)?;
    let bits = number(tags::BITS_ALLOCATED).ok_or_else(not_image)?;
    let samples = number(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let pixels = object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(not_image)?
        .to_bytes()
        .map_err(|_| not_image())?
        .into_owned();
    let frame_bits = rows * columns * samples * bits;
    if frame_bits == 0 {
        return Err(not_image());
    }
    Ok((frame_bits.div_ceil(8), Bytes::from(pixels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists_and_accept_headers() {
        assert_eq!(frame_list("1,3, 2").unwrap(), vec![1, 3, 2]);
        assert!(frame_list("0").is_err());
        assert!(frame_list("1,x").is_err());
        assert!(frame_list("").is_err());
        assert!(negotiate(None).is_ok());
        assert!(negotiate(Some("multipart/related; type=\"application/octet-stream\"")).is_ok());
        assert!(negotiate(Some(
            "multipart/related; type=application/octet-stream; transfer-syntax=*"
        ))
        .is_ok());
        // dicomweb-client's default.
        assert!(negotiate(Some("multipart/related; type=\"*/*\"")).is_ok());
        assert!(negotiate(Some("multipart/related; type=\"image/jpeg\"")).is_err());
        assert!(negotiate(Some(
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.4.50"
        ))
        .is_err());
    }
}
