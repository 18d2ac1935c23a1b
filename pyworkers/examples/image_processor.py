"""image_pipeline example: test images made with Pillow, then thumbnails.

generate_images(specs): specs are {"width", "height", "color": [r, g, b], "label"}.
Each becomes a solid-colour PNG with its label in white at (10, 10), as the
pure-Python baseline makes them. Returns {"data": bytes (the PNG), "width",
"height", "label", "size_bytes"}: the PNG travels back as raw bytes. The last
result of a batch carries "worker": this process's pid and peak resident memory.

generate_thumbnails(items): items are {"data": bytes, "target_width": 150}. Each
image is decoded, resized to target_width wide (height int(h * tw / w), at least
1) with LANCZOS and encoded as PNG (optimize=True). Returns per image {"data":
bytes (the thumbnail PNG), "original_size": [w, h], "thumb_size": [w, h],
"original_bytes", "thumb_bytes", "data_type": the Python type the image arrived
as ("bytes" when it crossed raw)}. The last result of every batch also carries
"batch": the batch's start and end (time.monotonic(), one clock for every
process of the machine), a token unique to the batch, its image and pixel
counts; and "worker": this process's images and batches so far and its peak
resident memory (ru_maxrss).

Needs Pillow (Debian: python3-pil).
"""
import io
import os
import resource
import time
import uuid

_images = 0
_batches = 0


def _peak_rss_kb():
    """This process's peak resident set size in KiB (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def generate_images(specs):
    from PIL import Image, ImageDraw
    out = []
    for spec in specs:
        w, h = int(spec["width"]), int(spec["height"])
        img = Image.new("RGB", (w, h), tuple(int(c) for c in spec["color"]))
        ImageDraw.Draw(img).text((10, 10), spec["label"], fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        out.append({"data": data, "width": w, "height": h, "label": spec["label"],
                    "size_bytes": len(data)})
    if out:
        out[-1]["worker"] = {"pid": os.getpid(), "peak_rss_kb": _peak_rss_kb()}
    return out


def generate_thumbnails(items):
    global _images, _batches
    if not items:
        return []
    start = time.monotonic()
    token = uuid.uuid4().hex
    from PIL import Image
    lanczos = getattr(Image, "Resampling", Image).LANCZOS
    out = []
    pixels = 0
    for it in items:
        data = it["data"]
        tw = int(it.get("target_width", 150))
        img = Image.open(io.BytesIO(data))
        img.load()
        w, h = img.size
        pixels += w * h
        th = max(1, int(h * tw / w))
        buf = io.BytesIO()
        img.resize((tw, th), lanczos).save(buf, format="PNG", optimize=True)
        img.close()
        thumb = buf.getvalue()
        out.append({
            "data": thumb,
            "original_size": [w, h],
            "thumb_size": [tw, th],
            "original_bytes": len(data),
            "thumb_bytes": len(thumb),
            "data_type": type(data).__name__,
        })
    _images += len(items)
    _batches += 1
    pid = os.getpid()
    out[-1]["batch"] = {"token": token, "pid": pid, "images": len(items), "pixels": pixels,
                        "start": start, "end": time.monotonic()}
    out[-1]["worker"] = {"pid": pid, "images": _images, "batches": _batches,
                         "peak_rss_kb": _peak_rss_kb()}
    return out
