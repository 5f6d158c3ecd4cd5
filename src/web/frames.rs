//! WADO-RS `/frames/{list}` (PS3.18 10.4.1.1.4): frames of an image instance, one part a
//! frame: `multipart/related; type="application/octet-stream"` uncompressed little endian
//! (decoded from a compressed syntax as C-MOVE would), or, when the client asks, each
//! frame's bitstream as stored (`image/jpeg`, `image/jls`, `image/jp2`, `image/jphc`,
//! `image/dicom-rle`, or octet-stream with `transfer-syntax=*`), not decoded. The instance
//! comes through the retrieve service (any tier), read whole (unless the locator records
//! where each frame is, as for whole-slide tiles: then only those frames): at most [`MAX_INSTANCE`]
//! bytes, and at most [`READS_AT_ONCE`] instances at a time on the node, so memory stays
//! bounded whatever the number of requests.

use bytes::{Bytes, BytesMut};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::sync::SemaphorePermit;

use super::accept::media_ranges;
use super::WebError;
use crate::codec::pixels::frame_bitstreams;
use crate::model::transfer_syntax::{frame_media_type, EXPLICIT_VR_LITTLE_ENDIAN};
use crate::retrieve::{Instances, ReducedHead};
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

/// How frames are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEncoding {
    /// Decoded: uncompressed little endian, `application/octet-stream`.
    Native,
    /// Each frame's bitstream as stored (an encapsulated syntax, not decoded), in parts of
    /// `media` (the syntax's own media type, or `application/octet-stream` when the client
    /// asked for that with `transfer-syntax=*` or the stored syntax).
    Stored { media: &'static str },
}

/// The encodings the Accept header takes for frames stored in `stored_syntax`, the client's
/// preference first; 406 when none. Without an Accept header: decoded. As stored only on
/// request: `transfer-syntax=*` or the stored syntax's UID, or the media type of the stored
/// syntax (`image/jpeg`, `image/jls`, `image/jp2`, `image/jphc`, `image/dicom-rle`).
pub fn negotiate(
    accept: Option<&str>,
    stored_syntax: &str,
) -> Result<Vec<FrameEncoding>, WebError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(vec![FrameEncoding::Native]);
    };
    let stored_media = frame_media_type(stored_syntax);
    let mut encodings = Vec::new();
    for range in media_ranges(accept) {
        let syntax = range.param("transfer-syntax");
        let kind = match range.media_type.as_str() {
            "multipart/related" => range.param("type").unwrap_or("application/octet-stream"),
            "*/*" | "multipart/*" => "*/*",
            other => other,
        };
        // The names before PS3.18 registered them (dicomweb-client still sends both).
        let kind = match kind {
            "image/x-dicom-rle" => "image/dicom-rle",
            "image/x-jls" => "image/jls",
            kind => kind,
        };
        let as_stored = syntax.is_some_and(|s| s == "*" || s == stored_syntax);
        let stored = match stored_media {
            Some(media)
                if kind == media && syntax.is_none_or(|s| s == "*" || s == stored_syntax) =>
            {
                Some(FrameEncoding::Stored { media })
            }
            Some(_)
                if as_stored
                    && matches!(kind, "application/octet-stream" | "*/*" | "application/*") =>
            {
                Some(FrameEncoding::Stored {
                    media: "application/octet-stream",
                })
            }
            _ => None,
        };
        let native = matches!(kind, "application/octet-stream" | "*/*" | "application/*")
            && syntax.is_none_or(|s| s == EXPLICIT_VR_LITTLE_ENDIAN || s == "*");
        for encoding in stored
            .into_iter()
            .chain(native.then_some(FrameEncoding::Native))
        {
            if !encodings.contains(&encoding) {
                encodings.push(encoding);
            }
        }
    }
    if encodings.is_empty() {
        return Err(WebError::not_acceptable(format!(
            "frames are sent as multipart/related; type=\"application/octet-stream\" \
             (uncompressed){}, not {accept:?}",
            stored_media.map_or(String::new(), |m| format!(
                " or as stored ({m}, or transfer-syntax={stored_syntax} or *)"
            ))
        )));
    }
    Ok(encodings)
}

/// Entry `index` of `instances` as a data set in `syntax` (decoded from a compressed syntax
/// for an uncompressed one), read whole, and the permit that counts it among the
/// [`READS_AT_ONCE`] of the node: hold it until done with the bytes.
pub async fn read_whole(
    instances: &Instances,
    index: usize,
    syntax: &str,
) -> Result<(SemaphorePermit<'static>, Bytes), WebError> {
    read_whole_noting(instances, index, syntax)
        .await
        .map(|(read, data_set, _)| (read, data_set))
}

/// [`read_whole`], and why the data set is not the one stored, when it is not (a lossy copy
/// read because every lossless copy is lost).
pub async fn read_whole_noting(
    instances: &Instances,
    index: usize,
    syntax: &str,
) -> Result<(SemaphorePermit<'static>, Bytes, Option<String>), WebError> {
    let read = READS
        .acquire()
        .await
        .map_err(|e| WebError::internal(e.to_string()))?;
    let mut pieces = instances.read(vec![(index, syntax.to_string())]);
    let mut data_set = BytesMut::new();
    let mut substitute = None;
    while let Some(piece) = pieces.recv().await {
        match piece {
            Piece::Start { length, .. } if length > MAX_INSTANCE => {
                return Err(WebError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the instance is {length} bytes in {syntax}: images are served up to {MAX_INSTANCE}"),
                ))
            }
            Piece::Start {
                length, warning, ..
            } => {
                data_set.reserve(length as usize);
                substitute = warning;
            }
            Piece::Data(bytes) => data_set.extend_from_slice(&bytes),
            Piece::Failed { reason, .. } => return Err(WebError::internal(reason)),
        }
    }
    Ok((read, data_set.freeze(), substitute))
}

/// For frame `frame` of entry `index` of `instances`, the first bytes of the instance
/// holding it at the lowest resolution at least `width` x `height` (see
/// [`Instances::reduced_head`]), and the permit that counts the read among the
/// [`READS_AT_ONCE`] of the node; `None` when its resolution levels are not known.
pub async fn read_reduced(
    instances: &Instances,
    index: usize,
    frame: u32,
    width: u32,
    height: u32,
) -> Result<Option<(SemaphorePermit<'static>, ReducedHead)>, WebError> {
    let read = READS
        .acquire()
        .await
        .map_err(|e| WebError::internal(e.to_string()))?;
    Ok(instances
        .reduced_head(index, frame, width, height)
        .await
        .map(|head| (read, head)))
}

/// A data set as read by [`read_whole`] in `syntax`, parsed. Blocking.
pub fn parse(data_set: &[u8], syntax: &str) -> Result<InMemDicomObject, WebError> {
    let ts = TransferSyntaxRegistry
        .get(syntax)
        .ok_or_else(|| WebError::internal(format!("unknown transfer syntax {syntax}")))?;
    InMemDicomObject::read_dataset_with_ts(data_set, ts)
        .map_err(|e| WebError::internal(format!("cannot parse the instance: {e}")))
}

/// The frames `numbers` of the one instance in `instances`, in the first of `encodings`
/// that can be had: the multipart content type and body. Frames stored in a way whose frame
/// boundaries cannot be told are sent decoded if the client takes that.
pub async fn frames(
    instances: Instances,
    numbers: &[u32],
    encodings: &[FrameEncoding],
) -> Result<(String, Bytes), WebError> {
    let stored_syntax = instances.items()[0].transfer_syntax_uid.clone();
    // Why the stored frames cannot be told apart, once found: no other way of sending them
    // as stored is tried.
    let mut unsplittable: Option<String> = None;
    for encoding in encodings {
        let FrameEncoding::Stored { media } = *encoding else {
            return native_frames(&instances, numbers).await;
        };
        if unsplittable.is_some() {
            continue;
        }
        let content_type = format!("{media}; transfer-syntax={stored_syntax}");
        if let Some(places) = instances.recorded_frames(0, numbers).await {
            // Bounded before anything is read, and counted among the reads at once.
            bounded(places.iter().map(|p| p.length).sum())?;
            let _permit = READS
                .acquire()
                .await
                .map_err(|_| WebError::internal("reads closed"))?;
            if let Some(parts) = instances.read_frames(0, &places).await {
                return Ok(multipart_parts(
                    media,
                    &content_type,
                    parts.iter().map(|p| &p[..]),
                ));
            }
        }
        let (_read, data_set) = read_whole(&instances, 0, &stored_syntax).await?;
        let syntax = stored_syntax.clone();
        let split = tokio::task::spawn_blocking(move || stored_frames(&data_set, &syntax))
            .await
            .map_err(|e| WebError::internal(e.to_string()))??;
        let stored = match split {
            Ok(stored) => stored,
            Err(why) => {
                unsplittable = Some(why);
                continue;
            }
        };
        let parts = numbers
            .iter()
            .map(|&n| {
                stored
                    .get(n as usize - 1)
                    .map(|f| &f[..])
                    .ok_or_else(|| no_frame(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        bounded(parts.iter().map(|p| p.len() as u64).sum())?;
        return Ok(multipart_parts(media, &content_type, parts.into_iter()));
    }
    Err(WebError::not_acceptable(format!(
        "the stored frames cannot be sent as they are ({}) and decoded ones were not accepted",
        unsplittable.unwrap_or_default()
    )))
}

/// 413 when the frames asked for (a frame may be named more than once) add up to more than
/// [`MAX_INSTANCE`]: the body is built in memory.
fn bounded(total: u64) -> Result<(), WebError> {
    if total > MAX_INSTANCE {
        return Err(WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the frames asked for add up to {total} bytes: at most {MAX_INSTANCE} in one answer"),
        ));
    }
    Ok(())
}

fn no_frame(n: u32) -> WebError {
    WebError::new(
        StatusCode::NOT_FOUND,
        format!("no frame {n} in this instance"),
    )
}

/// The frames `numbers` decoded, as `application/octet-stream` parts.
async fn native_frames(
    instances: &Instances,
    numbers: &[u32],
) -> Result<(String, Bytes), WebError> {
    let (_read, data_set) = read_whole(instances, 0, EXPLICIT_VR_LITTLE_ENDIAN).await?;
    let (frame_len, pixels) = tokio::task::spawn_blocking(move || pixel_frames(&data_set))
        .await
        .map_err(|e| WebError::internal(e.to_string()))??;
    bounded(numbers.len() as u64 * frame_len as u64)?;
    let mut parts = Vec::with_capacity(numbers.len());
    for &n in numbers {
        let start = (n as usize - 1) * frame_len;
        parts.push(
            pixels
                .get(start..start + frame_len)
                .ok_or_else(|| no_frame(n))?,
        );
    }
    Ok(octet_stream_parts(parts.into_iter()))
}

/// Each frame's bitstream of an encapsulated data set (PS3.5 A.4): all fragments for one
/// frame; otherwise split by the Basic Offset Table, else one fragment per frame, else at
/// the fragments that begin a JPEG, JPEG-LS or JPEG 2000 bitstream. `Ok(Err(why))` when the
/// frames cannot be told apart (or the instance has no such pixel data). Blocking.
fn stored_frames(data_set: &[u8], syntax: &str) -> Result<Result<Vec<Vec<u8>>, String>, WebError> {
    let object = parse(data_set, syntax)?;
    let Some(pixel_data) = object.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(WebError::new(
            StatusCode::NOT_FOUND,
            "the instance has no image frames",
        ));
    };
    let (Some(fragments), Some(offsets)) = (
        pixel_data.value().fragments(),
        pixel_data.value().offset_table(),
    ) else {
        return Ok(Err("the pixel data is not encapsulated".into()));
    };
    let count = object
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    Ok(frame_bitstreams(fragments, offsets, count))
}

/// WADO-RS `/bulkdata/{tag}`: the value of top-level attribute `tag` of the one instance in
/// `instances` (Pixel Data native, as for frames), as a one-part multipart body.
pub async fn bulk_data(instances: Instances, tag: Tag) -> Result<(String, Bytes), WebError> {
    let (_read, data_set) = read_whole(&instances, 0, EXPLICIT_VR_LITTLE_ENDIAN).await?;
    let value = tokio::task::spawn_blocking(move || -> Result<Bytes, WebError> {
        let object = parse(&data_set, EXPLICIT_VR_LITTLE_ENDIAN)?;
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

/// A multipart/related body of uncompressed `application/octet-stream` parts.
fn octet_stream_parts<'a>(parts: impl Iterator<Item = &'a [u8]>) -> (String, Bytes) {
    let content_type =
        format!("application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}");
    multipart_parts("application/octet-stream", &content_type, parts)
}

/// A multipart/related body of `kind` parts, each with `content_type`.
fn multipart_parts<'a>(
    kind: &str,
    content_type: &str,
    parts: impl Iterator<Item = &'a [u8]>,
) -> (String, Bytes) {
    let boundary = format!("strata-frames-{:x}", std::process::id());
    let mut body = BytesMut::new();
    for part in parts {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                part.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(part);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"{kind}\"; boundary={boundary}"),
        body.freeze(),
    )
}

/// The length of one frame and the native Pixel Data of an Explicit VR Little Endian data
/// set. Blocking.
fn pixel_frames(data_set: &[u8]) -> Result<(usize, Bytes), WebError> {
    let object = parse(data_set, EXPLICIT_VR_LITTLE_ENDIAN)?;
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

    const JPEG: &str = "1.2.840.10008.1.2.4.50";
    const HTJ2K: &str = "1.2.840.10008.1.2.4.201";

    #[test]
    fn frame_lists_and_accept_headers() {
        use FrameEncoding::{Native, Stored};
        assert_eq!(frame_list("1,3, 2").unwrap(), vec![1, 3, 2]);
        assert!(frame_list("0").is_err());
        assert!(frame_list("1,x").is_err());
        assert!(frame_list("").is_err());
        let ok = |accept: Option<&str>, stored: &str| negotiate(accept, stored).unwrap();
        assert_eq!(ok(None, JPEG), vec![Native]);
        let octets = "multipart/related; type=\"application/octet-stream\"";
        assert_eq!(ok(Some(octets), JPEG), vec![Native]);
        // OHIF's: as stored when compressed, and decoded otherwise.
        let any = "multipart/related; type=application/octet-stream; transfer-syntax=*";
        let as_octets = Stored {
            media: "application/octet-stream",
        };
        assert_eq!(ok(Some(any), HTJ2K), vec![as_octets.clone(), Native]);
        assert_eq!(ok(Some(any), EXPLICIT_VR_LITTLE_ENDIAN), vec![Native]);
        // dicomweb-client's default.
        assert_eq!(
            ok(Some("multipart/related; type=\"*/*\""), JPEG),
            vec![Native]
        );
        let jpeg = "multipart/related; type=\"image/jpeg\"";
        assert_eq!(
            ok(Some(jpeg), JPEG),
            vec![Stored {
                media: "image/jpeg"
            }]
        );
        assert!(negotiate(Some(jpeg), HTJ2K).is_err());
        assert!(negotiate(Some(jpeg), EXPLICIT_VR_LITTLE_ENDIAN).is_err());
        let named = format!("{octets}; transfer-syntax={JPEG}");
        assert_eq!(ok(Some(&named), JPEG), vec![as_octets]);
        assert!(negotiate(Some(&named), HTJ2K).is_err());
        let preferred = format!("{octets};q=0.5, multipart/related; type=image/jphc");
        assert_eq!(
            ok(Some(&preferred), HTJ2K),
            vec![
                Stored {
                    media: "image/jphc"
                },
                Native
            ]
        );
    }
}
