//! WADO-RS rendered resources (PS3.18 10.4.1.1.3, 8.3.5.1): `/rendered` and `/thumbnail` of
//! an instance or one of its frames, `/rendered` of a series or study (every image, one part
//! each of a multipart body) and `/thumbnail` of a series or study (its middle instance).
//! Each image is read through the retrieve service like `/frames` (and shares its bound on
//! reads at once), decoded to native pixels and drawn by [`crate::codec::render`] as JPEG or
//! PNG, whichever the client accepts. A view smaller than the image (a thumbnail, a
//! `viewport` without a region) of an instance whose JPEG 2000 resolution levels are
//! recorded reads only the instance's first bytes and decodes only its lower resolutions;
//! any other is read whole. With `[renditions] cache_mb`, an image drawn is offered to the
//! rendition cache ([`crate::renditions`]) and a request for the same view of the same
//! stored copy is answered from it.
//!
//! Query parameters: `window=center,width[,linear|linear-exact|sigmoid]`,
//! `viewport=vw,vh[,sx,sy,sw,sh]`, `quality=1..100` (JPEG), `accept=image/png` (as the
//! Accept header). Others (`annotation`, `charset`, `iccprofile`) are ignored with a
//! `Warning` header.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use dicom_object::InMemDicomObject;

use super::accept::media_ranges;
use super::{frames, WebError};
use crate::codec::dicom::reduced_image;
use crate::codec::render::{self, Image, RenderError, Rendering, Viewport, VoiFunction, Window};
use crate::model::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN;
use crate::renditions::{thread_cpu, Cost};
use crate::retrieve::Instances;
use crate::service::Retrieval;

/// The size a thumbnail fits in, unless the request gives a viewport.
pub const THUMBNAIL: u32 = 128;
const DEFAULT_QUALITY: u8 = 90;

/// Which resource was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Rendered,
    Thumbnail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Jpeg,
    Png,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::Jpeg => "image/jpeg",
            Media::Png => "image/png",
        }
    }
}

/// What the query parameters and Accept header ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub media: Media,
    pub window: Option<Window>,
    pub viewport: Option<Viewport>,
    pub quality: u8,
    /// Parameters understood but not applied, for the `Warning` header.
    pub ignored: Vec<String>,
}

impl Request {
    pub fn parse(accept: Option<&str>, params: &[(String, String)]) -> Result<Request, WebError> {
        let mut request = Request {
            media: Media::Jpeg,
            window: None,
            viewport: None,
            quality: DEFAULT_QUALITY,
            ignored: Vec::new(),
        };
        let mut accept = accept.map(str::to_string);
        for (key, value) in params {
            match key.as_str() {
                "window" => request.window = Some(window(value)?),
                "viewport" => request.viewport = Some(viewport(value)?),
                "quality" => {
                    request.quality = value
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(|| {
                            WebError::bad_request(format!("quality={value:?}: 1 to 100"))
                        })?
                }
                "accept" => accept = Some(value.clone()),
                "annotation" | "charset" | "iccprofile" => request.ignored.push(key.clone()),
                other => {
                    return Err(WebError::bad_request(format!(
                        "unknown query parameter {other:?} for a rendered resource"
                    )))
                }
            }
        }
        request.media = negotiate(accept.as_deref())?;
        Ok(request)
    }
}

/// `window=center,width[,function]`.
fn window(value: &str) -> Result<Window, WebError> {
    let bad = || {
        WebError::bad_request(format!(
            "window={value:?}: center,width[,linear|linear-exact|sigmoid] with width at least 1"
        ))
    };
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    let (center, width, function) = match parts.as_slice() {
        [c, w] => (number(c), number(w), Some(VoiFunction::Linear)),
        [c, w, f] => (number(c), number(w), VoiFunction::parse(f)),
        _ => return Err(bad()),
    };
    match (center, width.filter(|w| *w >= 1.0), function) {
        (Some(center), Some(width), Some(function)) => Ok(Window {
            center,
            width,
            function,
        }),
        _ => Err(bad()),
    }
}

/// `viewport=vw,vh[,sx,sy,sw,sh]`.
fn viewport(value: &str) -> Result<Viewport, WebError> {
    let bad = || {
        WebError::bad_request(format!(
            "viewport={value:?}: vw,vh or vw,vh,sx,sy,sw,sh (whole numbers; vw and vh 1 to 4096)"
        ))
    };
    let numbers: Vec<u32> = value
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let size = |v: u32| (1..=4096).contains(&v);
    match numbers.as_slice() {
        [w, h] if size(*w) && size(*h) => Ok(Viewport {
            width: *w,
            height: *h,
            region: None,
        }),
        [w, h, sx, sy, sw, sh] if size(*w) && size(*h) => Ok(Viewport {
            width: *w,
            height: *h,
            region: Some((*sx, *sy, *sw, *sh)),
        }),
        _ => Err(bad()),
    }
}

/// JPEG unless the Accept header prefers PNG; 406 when it takes neither. `multipart/related`
/// with `type="image/jpeg"` or `"image/png"` (or no type: JPEG) is acceptable too: study
/// and series `/rendered` answer with one, and clients ask for it at either level.
pub fn negotiate(accept: Option<&str>) -> Result<Media, WebError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Media::Jpeg);
    };
    let image = |media_type: &str| match media_type {
        "image/jpeg" | "image/jpg" | "image/*" | "*/*" => Some(Media::Jpeg),
        "image/png" => Some(Media::Png),
        _ => None,
    };
    let best = media_ranges(accept)
        .iter()
        .find_map(|range| match range.media_type.as_str() {
            "multipart/related" | "multipart/*" => match range.param("type") {
                None => Some(Media::Jpeg),
                Some(inner) => image(inner),
            },
            other => image(other),
        });
    best.ok_or_else(|| {
        WebError::not_acceptable(format!(
            "rendered images are image/jpeg or image/png, not {accept:?}"
        ))
    })
}

/// Renders `frame` of entry `index` of `instances` as `request` and `resource` say.
pub async fn render(
    instances: Instances,
    index: usize,
    frame: u32,
    resource: Resource,
    request: Request,
) -> Result<Response, WebError> {
    if index >= instances.items().len() {
        return Err(WebError::new(StatusCode::NOT_FOUND, "no such instance"));
    }
    let encoded = encoded(&instances, index, frame, resource, &request).await?;
    let mut response = Response::new(Body::from(encoded));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(request.media.content_type()),
    );
    warn_ignored(&mut response, &request);
    Ok(response)
}

/// Study and series `/rendered`: the first frame of every image instance of `instances`, in
/// their order, one part each of a `multipart/related` body of `request.media`. Instances
/// with nothing to render (no Pixel Data, such as SR; a photometric interpretation that
/// cannot be shown) are left out; when none is left, 404. Images are read, rendered and sent
/// one at a time as the client takes them, so a study costs the memory of one image. An
/// image that cannot be read once the answer has begun ends the body short (as WADO-RS
/// retrieval does), so a client never takes a partial answer for a whole one.
pub async fn render_all(instances: Instances, request: Request) -> Result<Response, WebError> {
    let count = instances.items().len();
    // The first image before answering: its failure (or no image at all) is the status.
    let mut first = None;
    let mut next = 0;
    while first.is_none() && next < count {
        first = skip_unrenderable(
            encoded(&instances, next, 1, Resource::Rendered, &request).await,
            &instances,
            next,
        )?;
        next += 1;
    }
    let Some(first) = first else {
        return Err(WebError::new(
            StatusCode::NOT_FOUND,
            "none of these instances has an image to render",
        ));
    };
    let boundary = super::wado::boundary();
    let media = request.media.content_type();
    let part = move |image: Bytes, boundary: &str| {
        let mut out = Vec::with_capacity(image.len() + 96);
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: {media}\r\nContent-Length: {}\r\n\r\n",
                image.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&image);
        bytes::Bytes::from(out)
    };
    // Two parts ahead at most: the renderer waits for a slow client.
    let (parts, body) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, WebError>>(2);
    parts
        .send(Ok(part(first, &boundary)))
        .await
        .map_err(|_| WebError::internal("the response was dropped"))?;
    let tail = boundary.clone();
    let render_request = request.clone();
    tokio::spawn(async move {
        for index in next..count {
            let image = encoded(&instances, index, 1, Resource::Rendered, &render_request).await;
            let sent = match skip_unrenderable(image, &instances, index) {
                Ok(None) => continue,
                Ok(Some(image)) => parts.send(Ok(part(image, &tail))).await,
                Err(e) => {
                    tracing::warn!(
                        sop_instance_uid = %instances.items()[index].sop_instance_uid,
                        error = %e,
                        "WADO-RS rendered: image unreadable, response aborted"
                    );
                    let _ = parts.send(Err(e)).await;
                    return;
                }
            };
            if sent.is_err() {
                return; // the client hung up
            }
        }
        let _ = parts
            .send(Ok(bytes::Bytes::from(format!("\r\n--{tail}--\r\n"))))
            .await;
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|part| (part, body))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let content_type = format!("multipart/related; type=\"{media}\"; boundary={boundary}");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(|e| WebError::internal(e.to_string()))?,
    );
    warn_ignored(&mut response, &request);
    Ok(response)
}

/// `Ok(None)` for an instance with nothing to render (left out of a study or series),
/// the image when there is one, the error otherwise.
fn skip_unrenderable(
    image: Result<Bytes, WebError>,
    instances: &Instances,
    index: usize,
) -> Result<Option<Bytes>, WebError> {
    match image {
        Ok(image) => Ok(Some(image)),
        Err(e)
            if matches!(
                e.status(),
                StatusCode::NOT_FOUND | StatusCode::NOT_ACCEPTABLE
            ) =>
        {
            tracing::debug!(
                sop_instance_uid = %instances.items()[index].sop_instance_uid,
                reason = %e,
                "WADO-RS rendered: instance left out"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `frame` of entry `index` rendered and encoded as `request` says: from the rendition
/// cache when it holds it, else drawn (and offered to the cache).
async fn encoded(
    instances: &Instances,
    index: usize,
    frame: u32,
    resource: Resource,
    request: &Request,
) -> Result<Bytes, WebError> {
    let viewport = request.viewport.or(match resource {
        Resource::Thumbnail => Some(Viewport {
            width: THUMBNAIL,
            height: THUMBNAIL,
            region: None,
        }),
        Resource::Rendered => None,
    });
    let rendering = Rendering {
        frame,
        window: request.window,
        viewport,
    };
    // Everything the image depends on besides the instance.
    let view = format!("{rendering:?} {:?} {}", request.media, request.quality);
    let key = instances.rendition_key(index, view);
    if let Some(key) = &key {
        if let Some(image) = instances.rendition(key).await {
            return Ok(image);
        }
    }
    let started = std::time::Instant::now();
    let (image, cpu, lossy_copy) = drawn(instances, index, rendering, request).await?;
    let image = Bytes::from(image);
    // Drawn from a lossy copy (every lossless copy lost): not kept as the instance's
    // rendition, which a repaired primary would find again.
    if let Some(key) = key.as_ref().filter(|_| !lossy_copy) {
        let cost = Cost {
            elapsed: started.elapsed(),
            cpu,
        };
        instances.keep_rendition(key, image.clone(), cost);
    }
    Ok(image)
}

/// The image drawn: from its lower resolutions only when the view is smaller than the image
/// and the instance's resolution levels are recorded, else read and decoded whole; with the
/// CPU time its decoding and drawing took, and whether it was drawn from a lossy copy (every
/// lossless copy being lost).
async fn drawn(
    instances: &Instances,
    index: usize,
    rendering: Rendering,
    request: &Request,
) -> Result<(Vec<u8>, Duration, bool), WebError> {
    let (media, quality) = (request.media, request.quality);
    if let Some(Viewport {
        width,
        height,
        region: None,
    }) = rendering.viewport
    {
        if let Some((_read, reduced)) =
            frames::read_reduced(instances, index, rendering.frame, width, height).await?
        {
            let lossy_copy = reduced.lossy_copy;
            let drawn = tokio::task::spawn_blocking(move || {
                let cpu = thread_cpu();
                let object = reduced_image(&reduced.head, &reduced.levels, reduced.resolution)
                    .map_err(|e| e.to_string())?;
                let rendering = Rendering {
                    frame: 1,
                    ..rendering
                };
                let image = draw(&object, &rendering, media, quality).map_err(|e| e.to_string())?;
                Ok::<_, String>((image, thread_cpu().saturating_sub(cpu)))
            })
            .await;
            match drawn {
                Ok(Ok((image, cpu))) => return Ok((image, cpu, lossy_copy)),
                Ok(Err(reason)) => tracing::warn!(
                    sop_instance_uid = %instances.items()[index].sop_instance_uid,
                    reason, "reduced image not drawn; reading whole"),
                Err(e) => return Err(WebError::internal(e.to_string())),
            }
        }
    }
    let (_read, data_set, substitute) =
        frames::read_whole_noting(instances, index, EXPLICIT_VR_LITTLE_ENDIAN).await?;
    let lossy_copy = substitute.is_some();
    tokio::task::spawn_blocking(move || {
        let cpu = thread_cpu();
        let object = frames::parse(&data_set, EXPLICIT_VR_LITTLE_ENDIAN)?;
        let image = draw(&object, &rendering, media, quality)?;
        Ok((image, thread_cpu().saturating_sub(cpu), lossy_copy))
    })
    .await
    .map_err(|e| WebError::internal(e.to_string()))?
}

/// A native image drawn as `rendering` says and encoded as `media`. Blocking.
fn draw(
    object: &InMemDicomObject,
    rendering: &Rendering,
    media: Media,
    quality: u8,
) -> Result<Vec<u8>, WebError> {
    let image = Image::from_object(object).map_err(render_error)?;
    let raster = image.render(rendering).map_err(render_error)?;
    match media {
        Media::Jpeg => render::encode_jpeg(&raster, quality),
        Media::Png => render::encode_png(&raster),
    }
    .map_err(render_error)
}

/// The `Warning` header naming the parameters not applied.
fn warn_ignored(response: &mut Response, request: &Request) {
    if !request.ignored.is_empty() {
        let warning = format!("299 strata \"not applied: {}\"", request.ignored.join(", "));
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().insert(header::WARNING, value);
        }
    }
}

fn render_error(e: RenderError) -> WebError {
    match e {
        RenderError::NoSuchFrame(_) => WebError::new(StatusCode::NOT_FOUND, e.to_string()),
        RenderError::Parameter(_) => WebError::bad_request(e.to_string()),
        // As for /frames: an instance without a usable image has no such resource.
        RenderError::Attribute(_) => WebError::new(
            StatusCode::NOT_FOUND,
            format!("the instance has no image to render: {e}"),
        ),
        RenderError::Photometric(_) => WebError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("this instance cannot be rendered: {e}"),
        ),
        RenderError::Encode(_) => WebError::internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::web::test_params as params;

    #[test]
    fn parameters_and_accept_headers() {
        let request = Request::parse(
            Some("image/png"),
            &params(&[
                ("window", "40,400,sigmoid"),
                ("viewport", "256,256"),
                ("quality", "70"),
                ("annotation", "patient"),
            ]),
        )
        .unwrap();
        assert_eq!(request.media, Media::Png);
        assert_eq!(request.window.unwrap().function, VoiFunction::Sigmoid);
        assert_eq!(request.viewport.unwrap().width, 256);
        assert_eq!(request.quality, 70);
        assert_eq!(request.ignored, vec!["annotation"]);
        assert_eq!(
            Request::parse(None, &params(&[("accept", "image/png")]))
                .unwrap()
                .media,
            Media::Png
        );
        for bad in [
            ("window", "40"),
            ("window", "40,0"),
            ("window", "40,400,cubic"),
            ("viewport", "0,10"),
            ("viewport", "10,10,1"),
            ("quality", "0"),
            ("frame", "1"),
        ] {
            assert!(Request::parse(None, &params(&[bad])).is_err(), "{bad:?}");
        }
        assert_eq!(negotiate(None).unwrap(), Media::Jpeg);
        assert_eq!(negotiate(Some("*/*")).unwrap(), Media::Jpeg);
        assert_eq!(
            negotiate(Some("image/jpeg;q=0.5, image/png")).unwrap(),
            Media::Png
        );
        assert_eq!(
            negotiate(Some("multipart/related; type=\"image/png\"")).unwrap(),
            Media::Png
        );
        assert_eq!(negotiate(Some("multipart/related")).unwrap(), Media::Jpeg);
        assert!(negotiate(Some("multipart/related; type=\"application/dicom\"")).is_err());
        assert!(negotiate(Some("image/gif")).is_err());
        assert!(negotiate(Some("image/png;q=0")).is_err());
    }
}
