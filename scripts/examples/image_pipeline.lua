-- image_pipeline: 200 images (small: 20) made with Pillow in the workers, then
-- made into 150-pixel-wide thumbnails: two dispatch streams, the second pulling
-- from the first. The thumbnail stream batches by weight: an image weighs its
-- megapixels, a batch holds at most 2 of them (a bigger image goes alone), and
-- at most 4 batches are in flight. Image bytes cross as bytes both ways
-- (slither.bytes out, Python bytes back), raw beside the payload, never base64.
--
-- A stream pulls its input only as its batches finish, so the engine holds only
-- the images inside the two windows, whatever the image count.
--
-- Checks: every image has a thumbnail of the right size (read from the PNG
-- bytes themselves); the batches are the ones the weighted rule gives; the
-- batches in flight, as the workers saw them (each batch's start and end on the
-- machine's monotonic clock), never exceed 4; images arrived in Python as bytes,
-- and the bytes sent are the image bytes plus a small per-image overhead; the
-- engine's peak RSS growth stays under a bound set by the windows, not by the
-- image count. Every worker's peak RSS and the engine's are printed.
--
--   slither example image_pipeline [--scale small|full]
--   slither scripts/examples/image_pipeline.lua          (small scale)
local slither = require("slither")
local examples = require("slither.examples")

local M = {
  name = "image_pipeline",
  description = "200 Images / Backpressure + Memory Safety",
  needs = { "PIL" },
}

local MAX_WEIGHT = 2          -- megapixels per thumbnail batch
local MAX_IN_FLIGHT = 4       -- thumbnail batches in flight
local THUMB_W = 150
local GEN_BATCH = 5           -- images per generation batch
local GEN_IN_FLIGHT = 4       -- generation batches in flight
local SKEW_S = 0.002          -- each worker interval is narrowed by this at both ends
-- The engine holds at most the images of the two windows: the generation
-- stream's batches in flight and its results not yet pulled (GEN_IN_FLIGHT batches
-- together: it launches only when its results are all pulled), the one image the
-- weighted batcher holds back, and the thumbnail stream's batches in flight, held
-- for order or not yet consumed (MAX_IN_FLIGHT batches together, each at most the
-- largest batch of the weighted rule). Its peak RSS may grow by that many images
-- at the largest image's size, 4 times over (a frame read, its decoded strings,
-- the next frame encoded, allocator slack), plus RSS_BASE_MB for its own needs
-- (LuaJIT heap and GC slack, frame and codec buffers). None of it depends on the
-- number of images. (These solid-colour PNGs are small: at full scale all of them
-- together fit in the base; the count of images held shows the bound.)
local RSS_BASE_MB = 48

local function weight(w, h) return w * h / 1e6 end

-- ---- data (pyworkers/examples/pure_python_baselines.py, image_specs) ------------------

local function specs(scale)
  local rng = examples.rng(42137256)
  local k = scale == "small" and 10 or 1
  local list = {}
  local function color() return { rng:int(0, 255), rng:int(0, 255), rng:int(0, 255) } end
  for _ = 1, 50 / k do
    local w, h = 100 + rng:int(1, 300), 100 + rng:int(1, 300)
    list[#list + 1] = { width = w, height = h, color = color(), label = "small-" .. w .. "x" .. h }
  end
  for _ = 1, 80 / k do
    local w, h = 500 + rng:int(1, 780), 400 + rng:int(1, 520)
    list[#list + 1] = { width = w, height = h, color = color(), label = "medium-" .. w .. "x" .. h }
  end
  for _ = 1, 50 / k do
    list[#list + 1] = { width = 1920, height = 1080, color = color(), label = "large-1080p" }
  end
  for _ = 1, 20 / k do
    list[#list + 1] = { width = 3840, height = 2160, color = color(), label = "xl-4k" }
  end
  return rng:shuffle(list)
end

-- The weighted rule, in input order: fill up to MAX_WEIGHT, a heavier image alone.
local function reference_batches(list)
  local batches, cur, w = {}, nil, 0
  for i, s in ipairs(list) do
    local iw = weight(s.width, s.height)
    if cur and w + iw > MAX_WEIGHT then
      batches[#batches + 1] = cur
      cur = nil
    end
    if not cur then cur, w = {}, 0 end
    cur[#cur + 1] = i
    w = w + iw
    if w >= MAX_WEIGHT then
      batches[#batches + 1] = cur
      cur = nil
    end
  end
  if cur then batches[#batches + 1] = cur end
  return batches
end

local function be32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Width and height from a PNG's IHDR, or nil.
local function png_size(s)
  if type(s) ~= "string" or #s < 24 or s:sub(1, 8) ~= "\137PNG\r\n\26\n" or
      s:sub(13, 16) ~= "IHDR" then
    return nil
  end
  return be32(s, 17), be32(s, 21)
end

-- A number from the engine's /proc/self/status: VmHWM and VmRSS in KiB, Pid.
local function proc_status(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = "\n" .. f:read("*a")
  f:close()
  return tonumber(text:match("\n" .. field .. ":%s*(%d+)"))
end

-- Reset the peak (VmHWM) to the current RSS (Linux >= 4.0: "5" > clear_refs).
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  ok = f:close() and ok
  return ok and true or false
end

-- Most intervals open at once, each narrowed by SKEW_S at both ends.
local function max_overlap(intervals)
  local ev = {}
  for _, iv in ipairs(intervals) do
    local a, b = iv.start + SKEW_S, iv["end"] - SKEW_S
    if b > a then
      ev[#ev + 1] = { a, 1 }
      ev[#ev + 1] = { b, -1 }
    end
  end
  table.sort(ev, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
  local cur, peak = 0, 0
  for _, e in ipairs(ev) do
    cur = cur + e[2]
    if cur > peak then peak = cur end
  end
  return peak
end

local function mb(bytes) return bytes / 2 ^ 20 end

-- ---- the run ----------------------------------------------------------------------

function M.run(opts)
  local out, check = opts.out, opts.check
  local list = specs(opts.scale)
  local n = #list
  local ref = reference_batches(list)
  local ref_single, ref_max_images = 0, 0
  for _, b in ipairs(ref) do
    if #b == 1 then ref_single = ref_single + 1 end
    ref_max_images = math.max(ref_max_images, #b)
  end
  local kinds, total_px = {}, 0
  for _, s in ipairs(list) do
    local kind = s.label:match("^(%a+)")
    kinds[kind] = (kinds[kind] or 0) + 1
    total_px = total_px + s.width * s.height
  end
  -- More workers than both windows together: the windows, not the pool, bound
  -- the batches in flight.
  local size = math.max(opts.workers, MAX_IN_FLIGHT + GEN_IN_FLIGHT)
  local pool = examples.start_pool(opts, "image_pipeline", { size = size })
  out(string.format("%d images (%d small, %d medium, %d 1080p, %d 4K; %.1f MP); %d workers",
    n, kinds.small or 0, kinds.medium or 0, kinds.large or 0, kinds.xl or 0, total_px / 1e6, size))
  out(string.format("generate (Pillow, batches of %d, %d in flight) -> thumbnail " ..
    "(weighted: %d MP per batch, %d in flight, %d px wide)", GEN_BATCH, GEN_IN_FLIGHT, MAX_WEIGHT,
    MAX_IN_FLIGHT, THUMB_W))

  -- What crosses the wire, per stage, from the dispatch events.
  local wire = { fixed = { batches = 0, out = 0, items = 0 },
                 weighted = { batches = 0, out = 0, items = 0 } }
  local generated_in, consumed, held_peak = 0, 0, 0
  local tid = slither.telemetry.attach("slither.dispatch.batch.stop", function(_, m, md)
    local w = wire[md.strategy]
    if not w then return end
    w.batches = w.batches + 1
    w.items = w.items + (m.items or 0)
    w.out = w.out + (m.bytes_out or 0)
    if md.strategy == "fixed" then -- generated images reach the engine
      generated_in = generated_in + (m.items or 0)
      held_peak = math.max(held_peak, generated_in - consumed)
    end
  end)

  -- what the engine saw of each generated image
  local gen = { n = 0, bytes = 0, max_bytes = 0, px = 0, workers = {} }
  local function seen(g)
    gen.n = gen.n + 1
    gen.bytes = gen.bytes + #g.data
    gen.max_bytes = math.max(gen.max_bytes, #g.data)
    gen.px = gen.px + g.width * g.height
    if g.worker then
      local prev = gen.workers[g.worker.pid]
      if not prev or g.worker.peak_rss_kb > prev then gen.workers[g.worker.pid] = g.worker.peak_rss_kb end
    end
  end

  local input = {}
  for i, s in ipairs(list) do input[i] = slither.item.wrap(s, { index = i }) end
  collectgarbage()
  collectgarbage()
  local peak_reset = reset_peak()
  local rss0 = proc_status("VmRSS") or 0
  local hwm0 = proc_status("VmHWM") or 0

  local progress = opts.progress("images", "items")
  local t0 = slither.now()
  local generated = slither.dispatch.stream(input, {
    pool = pool, module = "image_processor", ["function"] = "generate_images",
    batch_size = GEN_BATCH, max_in_flight = GEN_IN_FLIGHT })
  -- the thumbnail stream's input: each generated image as it comes, its PNG
  -- marked as bytes
  local function next_image()
    local it = generated.next()
    if it == nil then return nil end
    local g = it.payload
    seen(g)
    it.payload = { data = slither.bytes(g.data), width = g.width, height = g.height,
                   target_width = THUMB_W }
    return it
  end
  local stream = slither.dispatch.stream(next_image, {
    pool = pool, module = "image_processor", ["function"] = "generate_thumbnails",
    strategy = "weighted", max_weight = MAX_WEIGHT, max_in_flight = MAX_IN_FLIGHT,
    weight_fn = function(it) return weight(it.payload.width, it.payload.height) end,
    on_error = "skip" })
  local res = { thumbs = 0, right_size = 0, png_ok = 0, as_bytes = 0, thumb_bytes = 0,
                orig_bytes = 0, seen_index = {}, distinct = 0 }
  local intervals, tokens, finals = {}, {}, {}
  local multi_over, batch_images = 0, 0
  for it in stream.next do
    consumed = consumed + 1
    local r, idx = it.payload, it.meta.index
    local s = list[idx]
    if not res.seen_index[idx] then
      res.seen_index[idx] = true
      res.distinct = res.distinct + 1
    end
    res.thumbs = res.thumbs + 1
    local ew, eh = THUMB_W, math.max(1, math.floor(s.height * THUMB_W / s.width))
    local pw, ph = png_size(r.data)
    if pw == ew and ph == eh then res.png_ok = res.png_ok + 1 end
    if r.thumb_size[1] == ew and r.thumb_size[2] == eh and r.original_size[1] == s.width and
        r.original_size[2] == s.height then
      res.right_size = res.right_size + 1
    end
    if r.data_type == "bytes" then res.as_bytes = res.as_bytes + 1 end
    res.thumb_bytes = res.thumb_bytes + #r.data
    res.orig_bytes = res.orig_bytes + r.original_bytes
    local b = r.batch
    if b then
      intervals[#intervals + 1] = b
      tokens[b.token] = true
      batch_images = batch_images + b.images
      if b.images > 1 and b.pixels > MAX_WEIGHT * 1e6 then multi_over = multi_over + 1 end
    end
    local w = r.worker
    if w and (not finals[w.pid] or w.batches > finals[w.pid].batches) then finals[w.pid] = w end
    it.payload = nil -- the thumbnail is checked: let it go
  end
  local elapsed = slither.now() - t0
  progress.done()
  slither.telemetry.detach(tid)
  local hwm1 = proc_status("VmHWM") or 0
  local gen_report, report = generated:report(), stream:report()
  local all_pids = pool:pids()
  pool:stop()

  local ntokens = 0
  for _ in pairs(tokens) do ntokens = ntokens + 1 end
  local overlap = max_overlap(intervals)

  out("--- Results ---")
  out(string.format("  generated %d images: %.1f MP, %.2f MB of PNG (largest %.1f KB)", gen.n,
    gen.px / 1e6, mb(gen.bytes), gen.max_bytes / 1024))
  out(string.format("  %d thumbnails: %.2f MB -> %.2f MB (%.1f%% of the original bytes)",
    res.thumbs, mb(res.orig_bytes), mb(res.thumb_bytes),
    100 * res.thumb_bytes / math.max(1, res.orig_bytes)))
  out(string.format("  weighted batches: %d (%d with a single image, up to %d images in one)",
    ntokens, ref_single, ref_max_images))
  out(string.format("  thumbnail batches in flight, seen by the workers: at most %d (limit %d)",
    overlap, MAX_IN_FLIGHT))
  out(string.format("  bytes sent to the thumbnail stage: %.2f MB for %.2f MB of images " ..
    "(base64 would be %.2f MB)", mb(wire.weighted.out), mb(gen.bytes), mb(gen.bytes * 4 / 3)))
  out("--- Memory ---")
  local pids = {}
  for _, pid in ipairs(all_pids) do pids[#pids + 1] = pid end
  table.sort(pids)
  for _, pid in ipairs(pids) do
    local f = finals[pid]
    local peak = math.max(f and f.peak_rss_kb or 0, gen.workers[pid] or 0)
    if peak > 0 then
      out(string.format("  worker %d: peak RSS %.1f MB, %d thumbnails in %d batches", pid,
        peak / 1024, f and f.images or 0, f and f.batches or 0))
    else
      out(string.format("  worker %d: no batch (idle)", pid))
    end
  end
  -- The bound: the images the two windows can hold (see held_bound), four times
  -- over at the largest image's size, plus the base.
  local held_bound = GEN_BATCH * GEN_IN_FLIGHT + 1 + MAX_IN_FLIGHT * ref_max_images
  local window_bytes = held_bound * gen.max_bytes
  local bound_kb = RSS_BASE_MB * 1024 + 4 * window_bytes / 1024
  local growth_kb = hwm1 - (peak_reset and rss0 or hwm0)
  out(string.format("  engine (slither, pid %d): peak RSS %.1f MB (VmHWM), %.1f MB before the " ..
    "run; growth %.1f MB%s", proc_status("Pid") or 0, hwm1 / 1024,
    rss0 / 1024, growth_kb / 1024, peak_reset and "" or " (the peak could not be reset: " ..
    "measured from the earlier peak)"))
  out(string.format("  engine bound: %d MB + 4 x %d images x %.1f KB (the largest) = %.1f MB; " ..
    "all %d images together are %.2f MB", RSS_BASE_MB, held_bound, gen.max_bytes / 1024,
    bound_kb / 1024, n, mb(gen.bytes)))
  out(string.format("  images held by the engine at once: at most %d of %d (bound %d)", held_peak, n,
    held_bound))
  -- The thumbnail stage alone (generation overlaps it): from the first batch's
  -- start to the last batch's end, as the workers saw them.
  local first, last = math.huge, -math.huge
  for _, iv in ipairs(intervals) do
    first, last = math.min(first, iv.start), math.max(last, iv["end"])
  end
  local thumb_ms = #intervals > 0 and (last - first) * 1000 or 0
  out("--- Timing ---")
  opts.timing("elapsed (generation and thumbnails, overlapping)", elapsed)
  opts.throughput("throughput", n, elapsed, "images")
  opts.timing("thumbnails (first batch start to last batch end, in the workers)", thumb_ms)
  opts.throughput("thumbnail throughput", n, thumb_ms, "images")
  out(string.format("  thumbnail throughput (pixels): %.1f megapixels/s", total_px / 1e6 /
    math.max(thumb_ms / 1000, 0.001)))

  out("--- Correctness ---")
  check("images generated", n, gen.n)
  check("thumbnails", n, res.thumbs)
  check("distinct images with a thumbnail", n, res.distinct)
  check("images in failed batches", 0, gen_report.items_failed + report.items_failed)
  check("thumbnails whose reported sizes are right (150 x int(h*150/w))", n, res.right_size)
  check("thumbnails whose PNG header has the right size", n, res.png_ok)
  check("thumbnail batches (reference: the weighted rule over the input order)", #ref,
    wire.weighted.batches)
  check("thumbnail batches reported by the workers (distinct tokens)", #ref, ntokens)
  check("images in the workers' batches", n, batch_images)
  check("batches of several images over " .. MAX_WEIGHT .. " MP", 0, multi_over)
  check("thumbnail batches in flight at once, seen by the workers (at most)", "<=" .. MAX_IN_FLIGHT,
    overlap, function() return overlap <= MAX_IN_FLIGHT end)
  check("images that arrived in Python as bytes", n, res.as_bytes)
  check("bytes sent beyond the image bytes, per image (raw: < 256; base64: > a third)", "<256",
    (wire.weighted.out - gen.bytes) / n, function(_, o) return o < 256 end)
  check("engine peak RSS growth, MB (bound from the windows, not the image count)",
    string.format("<=%.1f", bound_kb / 1024), math.floor(growth_kb / 102.4 + 0.5) / 10,
    function() return growth_kb <= bound_kb end)
  check("images held by the engine at once (bound from the windows, not the image count)",
    "<=" .. held_bound, held_peak, function() return held_peak <= held_bound end)
  out("Big images go alone and at most 4 batches run at once, so a worker holds one")
  out("batch's pixels at a time and the engine only what the windows let through.")
end

if (...) ~= examples.MODULE_ARG then
  return examples.run_script(M, arg)
end
return M
