-- text_analysis: 5,000 documents (small: 500) through prepare (Lua) -> analyze
-- (Python) -> classify (router), with a stopword store whose session view the
-- Python stage calls.
--
-- The story: a per-process word index and document counter cannot lose updates,
-- because each worker is its own process and owns its counters; the engine
-- merges them in one place. Every claim is checked: bucket totals, the per-worker
-- counters of every worker against the results it returned, and the merged
-- vocabulary against a reference computed here in one process.
--
--   slither example text_analysis [--scale small|full]
--   slither scripts/examples/text_analysis.lua          (small scale)
local slither = require("slither")
local examples = require("slither.examples")

local M = {
  name = "text_analysis",
  description = "5K Docs / Shared Accumulator Races",
  needs = {},
}

-- Words the generator draws from: 28 neutral, 4 positive, 4 negative content
-- words, and 8 stopwords (which the analysis must leave out of every index).
local NEUTRAL = {
  "system", "data", "process", "network", "model", "signal", "report", "market",
  "service", "design", "energy", "policy", "result", "method", "value", "project",
  "engine", "river", "garden", "window", "machine", "library", "station", "paper",
  "music", "theory", "budget", "harbor",
}
local POSITIVE = { "good", "excellent", "happy", "amazing" }
local NEGATIVE = { "bad", "terrible", "sad", "awful" }
local DRAWN_STOPWORDS = { "the", "a", "and", "of", "to", "is", "in", "it" }

local STOPWORDS = {
  "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
  "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
  "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
  "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
  "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
  "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
  "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same",
  "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
  "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too",
  "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
  "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
  "yourselves",
}

local StopwordStore = slither.store.define{
  name = "example_stopwords",
  tables = { { name = "stopwords", type = "set" } },
  views = { {
    name = "get_stopwords", mode = "scalar", scope = "session", timeout_ms = 5000,
    handler = function(_, ctx)
      local words = ctx.store:fold("stopwords", function(k, _, acc)
        acc[#acc + 1] = k
        return acc
      end, slither.array())
      table.sort(words)
      return { stopwords = words }
    end,
  } },
  load = function(t)
    for _, w in ipairs(STOPWORDS) do t.stopwords:put(w, true) end
  end,
}

local TextPipe = slither.pipe("text_analysis", function(p)
  p:store(StopwordStore)
  p:stage("prepare", "lua", { handler = function(item)
    return { text = item.payload }
  end })
  p:stage("analyze", "python", { pool = "examples", module = "text_analyzer",
                                 ["function"] = "analyze_batch", batch_size = 50 })
  p:stage("classify", "router", { routes = {
    { function(item) return item.payload.sentiment > 0.15 end, "positive" },
    { function(item) return item.payload.sentiment < -0.15 end, "negative" } } })
  p:output("positive")
  p:output("negative")
  p:on_error("analyze", "skip")
  p:on_error("*", "halt")
end)

-- ---- the corpus and the reference (one process, here) ----------------------------

local function corpus(n)
  local rng = examples.rng(42137256)
  local vocab = {}
  for _, list in ipairs({ NEUTRAL, POSITIVE, NEGATIVE, DRAWN_STOPWORDS }) do
    for _, w in ipairs(list) do vocab[#vocab + 1] = w end
  end
  local docs = {}
  for d = 1, n do
    local words = 15 + rng:int(1, 50) -- 16..65
    local sentences, left = {}, words
    while left > 0 do
      local len = math.min(left, rng:int(4, 12))
      local s = {}
      for i = 1, len do s[i] = rng:pick(vocab) end
      s[1] = s[1]:sub(1, 1):upper() .. s[1]:sub(2)
      sentences[#sentences + 1] = table.concat(s, " ") .. "."
      left = left - len
    end
    docs[d] = table.concat(sentences, " ")
  end
  return docs
end

local function set_of(list)
  local s = {}
  for _, w in ipairs(list) do s[w] = true end
  return s
end

local function syllables(word)
  local n = 0
  for _ in word:gmatch("[aeiouy]+") do n = n + 1 end
  if n > 1 and word:sub(-1) == "e" and word:sub(-2) ~= "le" and word:sub(-2) ~= "ee" then
    n = n - 1
  end
  return math.max(1, n)
end

-- What the analysis of one document must give, and its class.
local function reference(text, stop, pos_set, neg_set, vocab_acc)
  local total, syl, pos, neg, content = 0, 0, 0, 0, 0
  local uniq, nuniq = {}, 0
  for w in text:lower():gmatch("%w+") do
    total = total + 1
    syl = syl + syllables(w)
    if pos_set[w] then pos = pos + 1 end
    if neg_set[w] then neg = neg + 1 end
    if not stop[w] then
      content = content + 1
      if not uniq[w] then uniq[w] = true; nuniq = nuniq + 1 end
      vocab_acc[w] = (vocab_acc[w] or 0) + 1
    end
  end
  local sentences = 0
  for piece in (text .. "."):gmatch("([^.!?]*)[.!?]+") do
    if piece:match("%S") then sentences = sentences + 1 end
  end
  sentences = math.max(1, sentences)
  local class = "default"
  if 20 * (pos - neg) > 3 * total then class = "positive"
  elseif 20 * (pos - neg) < -3 * total then class = "negative" end
  return {
    word_count = total, content_words = content, unique_words = nuniq,
    positive_count = pos, negative_count = neg, class = class,
    readability = 206.835 - 1.015 * (total / sentences) - 84.6 * (syl / total),
  }
end

-- ---- the run ----------------------------------------------------------------------

function M.run(opts)
  local out, check = opts.out, opts.check
  local n = opts.scale == "small" and 500 or 5000
  local pool = examples.start_pool(opts)
  local docs = corpus(n)
  local stop, pos_set, neg_set = set_of(STOPWORDS), set_of(POSITIVE), set_of(NEGATIVE)
  local ref_vocab, refs = {}, {}
  for i, text in ipairs(docs) do refs[i] = reference(text, stop, pos_set, neg_set, ref_vocab) end

  local session = "text_analysis:" .. opts.scale
  -- count the stopword view's calls for this run
  local view_calls, view_errors = 0, 0
  local vid = slither.telemetry.attach("slither.bridge.view", function(name, _, md)
    if md.view ~= "get_stopwords" or md.session ~= session then return end
    if name == "slither.bridge.view.stop" then view_calls = view_calls + 1
    elseif name == "slither.bridge.view.exception" then view_errors = view_errors + 1 end
  end)

  out(string.format("Processing %d documents through: prepare -> analyze -> classify", n))
  local input = {}
  for i, text in ipairs(docs) do input[i] = slither.item.wrap(text, { doc = i }) end
  local progress = opts.progress("analyze", "docs")
  local t0 = slither.now()
  local outputs, report = slither.run_pipe(TextPipe, input, { session = session })
  local elapsed = slither.now() - t0
  progress.done()
  slither.telemetry.detach(vid)
  if not outputs then
    examples.fail("the pipe halted: " .. tostring(report and report.message))
  end
  local all_pids = pool:pids()
  pool:stop()

  out("--- Pipeline results ---")
  for _, b in ipairs({ "default", "negative", "positive" }) do
    out(string.format("  %s: %d", b, #outputs[b]))
  end
  local st = report.stages.analyze
  out(string.format("  analyze stage: in %d, out %d, failed %d", st["in"], st.out, st.failed))
  out("--- Timing ---")
  opts.timing("pipeline elapsed", elapsed)
  opts.throughput("throughput", n, elapsed, "docs")

  -- Every result names the worker that produced it, and the last result of each
  -- batch carries that worker's state after the batch. So every worker that
  -- analyzed a document is known from the results themselves, with its final
  -- state (the snapshot with the highest document count): no probe call that
  -- could land on the wrong worker, and no worker can be missed.
  local per_pid, finals = {}, {}
  local analysis_equal, classified = 0, 0
  for _, bucket in ipairs({ "positive", "negative", "default" }) do
    for _, it in ipairs(outputs[bucket]) do
      classified = classified + 1
      local r, ref = it.payload, refs[it.meta.doc]
      per_pid[r.worker_pid] = (per_pid[r.worker_pid] or 0) + 1
      local ws = r.worker_state
      if ws and (not finals[ws.pid] or ws.docs > finals[ws.pid].docs) then finals[ws.pid] = ws end
      if r.word_count == ref.word_count and r.content_words == ref.content_words and
          r.unique_words == ref.unique_words and r.positive_count == ref.positive_count and
          r.negative_count == ref.negative_count and ref.class == bucket and
          math.abs(r.readability - ref.readability) <= 0.006 then
        analysis_equal = analysis_equal + 1
      end
    end
  end
  local ref_counts = { positive = 0, negative = 0, default = 0 }
  for _, ref in ipairs(refs) do ref_counts[ref.class] = ref_counts[ref.class] + 1 end

  out("--- Worker isolation ---")
  local pids = {}
  for pid in pairs(per_pid) do pids[#pids + 1] = pid end
  table.sort(pids)
  local counters_equal, docs_sum, with_full_list, with_state = 0, 0, 0, 0
  local merged = {}
  for _, pid in ipairs(pids) do
    local f = finals[pid]
    if f then
      with_state = with_state + 1
      local vocab, occ = 0, 0
      for w, c in pairs(f.index) do
        vocab, occ = vocab + 1, occ + c
        merged[w] = (merged[w] or 0) + c
      end
      docs_sum = docs_sum + f.docs
      if f.docs == per_pid[pid] then counters_equal = counters_equal + 1 end
      if f.stopwords == #STOPWORDS then with_full_list = with_full_list + 1 end
      out(string.format("  worker %d: %d docs (%d results returned), %d words in its index, " ..
        "%d occurrences", pid, f.docs, per_pid[pid], vocab, occ))
    else
      out(string.format("  worker %d: %d results returned, no state reported", pid, per_pid[pid]))
    end
  end
  local idle = 0
  for _, pid in ipairs(all_pids) do if not per_pid[pid] then idle = idle + 1 end end
  out(string.format("  %d of %d workers analyzed documents%s", #pids, #all_pids,
    idle > 0 and string.format(" (%d had nothing to do)", idle) or ""))

  local ref_words, ref_occ, merged_words, merged_occ, differ, stop_in_merged = 0, 0, 0, 0, 0, 0
  for w, c in pairs(ref_vocab) do
    ref_words, ref_occ = ref_words + 1, ref_occ + c
    if merged[w] ~= c then differ = differ + 1 end
  end
  for w, c in pairs(merged) do
    merged_words, merged_occ = merged_words + 1, merged_occ + c
    if ref_vocab[w] == nil then differ = differ + 1 end
    if stop[w] then stop_in_merged = stop_in_merged + 1 end
  end
  local top = {}
  for w, c in pairs(merged) do top[#top + 1] = { w, c } end
  table.sort(top, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  local shown = {}
  for i = 1, math.min(10, #top) do shown[i] = top[i][1] .. " " .. top[i][2] end
  out("  merged top words: " .. table.concat(shown, ", "))

  out("--- Correctness ---")
  check("documents classified (positive + negative + default)", n, classified)
  check("positive documents (reference: sentiment > 0.15)", ref_counts.positive, #outputs.positive)
  check("negative documents (reference: sentiment < -0.15)", ref_counts.negative, #outputs.negative)
  check("default documents", ref_counts.default, #outputs.default)
  check("documents whose analysis equals the reference", n, analysis_equal)
  check("documents in failed batches", 0, st.failed)
  check("workers reporting their final state (every worker that returned results)", #pids,
    with_state)
  check("workers whose own document counter equals the results they returned", #pids,
    counters_equal)
  check("sum of the per-worker document counters", n, docs_sum)
  check("stopword view calls (one per worker in this run)", #pids, view_calls)
  check("stopword view errors", 0, view_errors)
  check("workers holding the whole stopword list from the view", #pids, with_full_list)
  check("merged vocabulary size (reference: one process)", ref_words, merged_words)
  check("merged content-word occurrences", ref_occ, merged_occ)
  check("words whose merged count differs from the reference", 0, differ)
  check("stopwords in the merged vocabulary", 0, stop_in_merged)
  out("Each worker is a process of its own: its index and counter are touched by one thread,")
  out("so no update is lost, and the merge happens once, in the engine.")
end

if (...) ~= examples.MODULE_ARG then
  return examples.run_script(M, arg)
end
return M
