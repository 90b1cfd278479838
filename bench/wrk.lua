-- wrk script for bench/run.py. Each request carries ROWS rows taken in turn from the lines
-- of FILE (64 distinct bodies, so a tree model cannot coast on one input). WRAP=instances
-- wraps the lines (JSON objects) as {"instances": [...]}. Status classes are counted when
-- COUNT_STATUS is set (it costs a Lua call per response), and done() prints one JSON line.
-- MODELS=n spreads the requests over /models/m0/invoke ... /models/m{n-1}/invoke in turn
-- (a multi-model endpoint, bench/models.py). WRAP=v2 makes each body an Open Inference
-- Protocol request for a model with one [N, F] FP32 input named INPUT (the lines are JSON
-- arrays), and BODIES=dir sends the bodies dir/1 ... dir/64 as they are, each with the
-- Inference-Header-Content-Length in dir/k.len (bench/v2.py); URL_PATH sets the path.
local file = os.getenv("FILE")
local rows = tonumber(os.getenv("ROWS") or "1")
local ctype = os.getenv("CTYPE") or "text/csv"
local wrap = os.getenv("WRAP")
local models = tonumber(os.getenv("MODELS") or "0")
local url_path = os.getenv("URL_PATH")
local bodies = os.getenv("BODIES")

local lines = {}
for line in io.lines(file) do
  if #line > 0 then lines[#lines + 1] = line end
end

local requests = {}
local n = 0
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local at = 0
  for k = 1, 64 do
    local picked = {}
    for r = 1, rows do
      picked[r] = lines[(at % #lines) + 1]
      at = at + 1
    end
    local body
    if wrap == "instances" then
      body = '{"instances": [' .. table.concat(picked, ",") .. "]}"
    elseif wrap == "v2" then
      local flat = {}
      local width = 0
      for r = 1, rows do
        local inner = picked[r]:sub(2, -2)
        flat[r] = inner
        if r == 1 then
          local _, commas = inner:gsub(",", ",")
          width = commas + 1
        end
      end
      body = '{"inputs": [{"name": "' .. (os.getenv("INPUT") or "input") ..
        '", "datatype": "FP32", "shape": [' .. rows .. ", " .. width ..
        '], "data": [' .. table.concat(flat, ",") .. "]}]}"
    else
      body = table.concat(picked, "\n") .. "\n"
    end
    requests[k] = body
  end
  -- Every (body, model) pair built once: 64 bodies times the models, or the 64 bodies.
  local built = {}
  local paths = math.max(models, 1)
  for m = 0, paths - 1 do
    local path = url_path
    if models > 0 then path = "/models/m" .. m .. "/invoke" end
    for k = 1, 64 do
      local headers = {["Content-Type"] = ctype}
      local body = requests[k]
      if bodies then
        local f = assert(io.open(bodies .. "/" .. k, "rb"))
        body = f:read("*a")
        f:close()
        local l = assert(io.open(bodies .. "/" .. k .. ".len", "rb"))
        headers["Inference-Header-Content-Length"] = l:read("*a")
        l:close()
      end
      built[#built + 1] = wrk.format("POST", path, headers, body)
    end
  end
  requests = built
  ok, s429, s503, s5xx, sother = 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  if models > 0 then
    -- Model n % models, body n % 64: consecutive requests go to different models.
    return requests[(n % models) * 64 + (n % 64) + 1]
  end
  return requests[(n % 64) + 1]
end

if os.getenv("COUNT_STATUS") then
  function response(status, headers, body)
    if status < 300 then ok = ok + 1
    elseif status == 429 then s429 = s429 + 1
    elseif status == 503 then s503 = s503 + 1
    elseif status >= 500 then s5xx = s5xx + 1
    else sother = sother + 1 end
  end
end

function done(summary, latency, _)
  local counts = {ok = 0, s429 = 0, s503 = 0, s5xx = 0, sother = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(counts) do counts[k] = counts[k] + (t:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "non_2xx": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"p999_us": %d, "max_us": %d, "ok": %d, "s429": %d, "s503": %d, "s5xx": %d, "sother": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    counts.ok, counts.s429, counts.s503, counts.s5xx, counts.sother))
end
