-- Images by URL: vmlua.image{url=, sha256=} returns the local path of an
-- image, downloaded once into the cache's images/ directory and verified.
--
-- A downloaded image is named by its SHA-256 (two URLs with one content
-- share the file; SHA.url beside it says where it came from). It is written
-- to SHA.part and renamed only once its sum matches, so a file named SHA was
-- verified when it was stored and is used without a request. An interrupted
-- download leaves SHA.part, and the next call resumes it (HTTP Range; a
-- server that ignores Range sends it all again). A lock on SHA.lock keeps
-- two vmlua from writing one file. A local path or a file:// URL is verified
-- where it is, and neither copied nor ever deleted.
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local lfs = require "lfs"
local notice = require "vmlua.notice"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"

local image = {}

-- Where downloaded images live.
function image.dir()
  return runtime.cache() .. "/images"
end

-- Raises a failure of `job` ({where=, url=}): "FILE:LINE: vmlua.image: URL: ...".
local function fail(job, fmt, ...)
  errors.raise(string.format("%s: vmlua.image: %s: %s", fields.location(job.where), job.url, fmt:format(...)))
end

-- The SHA-256 of a file (hashed away from the loop), or nil and why.
function image.sha256(path)
  return task.await(function(wake) core.sha256_file(path, wake) end)
end

local function mkdirs(job, dir)
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    if not lfs.attributes(path, "mode") then
      local ok, err = lfs.mkdir(path)
      if not ok and lfs.attributes(path, "mode") ~= "directory" then fail(job, "cannot make %s: %s", path, err) end
    end
  end
end

local function size_of(path)
  return lfs.attributes(path, "size")
end

local function mib(bytes)
  return string.format("%.1f", bytes / 1048576)
end

-- A size for messages: "1000 bytes", "97.7 KiB", "2.0 MiB".
local function human(bytes)
  if bytes < 1024 then return bytes .. " bytes" end
  if bytes < 1048576 then return string.format("%.1f KiB", bytes / 1024) end
  return mib(bytes) .. " MiB"
end

-- A progress bar on stderr, redrawn at most ten times a second; nil when
-- stderr is not a terminal (or vmlua -q).
local function progress_bar(label)
  if notice.quiet or not core.isatty(2) then return nil end
  if #label > 24 then label = label:sub(1, 21) .. "..." end
  local last, shown = -1, false
  local bar = {}
  function bar.update(have, total, final)
    local now = core.now()
    if not final and now - last < 0.1 then return end
    last, shown = now, true
    local line
    if total and total > 0 then
      local fraction = math.min(1, have / total)
      local width = 30
      local filled = math.floor(fraction * width + 0.5)
      line = string.format("%-24s %3d%% [%s%s] %s/%s MiB", label, math.floor(fraction * 100),
                           string.rep("=", filled), string.rep(" ", width - filled), mib(have), mib(total))
    else
      line = string.format("%-24s %s MiB", label, mib(have))
    end
    io.stderr:write("\r", line, "\27[K")
    io.stderr:flush()
  end
  function bar.done()
    if shown then io.stderr:write("\n") io.stderr:flush() end
  end
  return bar
end

-- One HTTP transfer into `part`, from `offset` on: status, size, err.
local function transfer(url, part, offset, bar)
  local handle
  return task.await(function(wake)
    local err
    handle, err = core.download {
      url = url, path = part, offset = offset,
      on_progress = bar and function(have, total) bar.update(have, total) end,
      on_done = function(status, size, why)
        if bar and why == nil then bar.update(size, size, true) end
        wake(status, size, why)
      end,
    }
    if not handle then wake(0, offset, err) end
    return function() if handle then handle:close() end end
  end)
end

-- Downloads url into part (resuming what is there) and checks its sum.
local function fetch(job, part)
  local url = job.url
  local label = url:match("([^/?#]+)[?#]?[^/]*$") or url
  local bar = progress_bar(label)
  local offset = size_of(part) or 0
  local status, size, err = transfer(url, part, offset, bar)
  if err and status == 416 and offset > 0 then -- the part is no prefix of what the server has
    os.remove(part)
    status, size, err = transfer(url, part, 0, bar)
  end
  if bar then bar.done() end
  if err and (size_of(part) or 0) == 0 then os.remove(part) end -- nothing worth resuming
  if err and status >= 400 then
    fail(job, "the server answered HTTP %d", status)
  elseif err and size == 0 then
    fail(job, "cannot download it: %s", err)
  elseif err then
    fail(job, "the download stopped after %s (%s); its partial file %s is kept, and the next call resumes it",
         human(size), err, part)
  end
  local got, why = image.sha256(part)
  if not got then fail(job, "%s", why) end
  if got ~= job.sha256 then
    os.remove(part)
    fail(job, "wrong checksum: expected sha256 %s, got %s; the download is deleted", job.sha256, got)
  end
end

local function write_sidecar(path, url)
  local f = io.open(path, "w")
  if f then
    f:write(url, "\n")
    f:close()
  end
end

-- Holds the lock of one image while it is downloaded; another vmlua that
-- holds it is waited for (polled: a lock frees no event to wait on).
local function lock(job, path)
  local said = false
  while true do
    local held, err, busy = core.lock(path)
    if held then return held end
    if not busy then fail(job, "cannot lock %s", err) end
    if not said then notice.say("waiting for another vmlua that is downloading " .. job.url) end
    said = true
    task.await(function(wake) -- not task.sleep, which vmlua plan turns off
      local timer = core.timer(0.5, 0, wake)
      return function() timer:close() end
    end)
  end
end

local function download(job)
  local dir = image.dir()
  local path = dir .. "/" .. job.sha256
  if lfs.attributes(path, "mode") == "file" then return path end
  mkdirs(job, dir)
  local held = lock(job, path .. ".lock")
  local ok, err = pcall(function()
    if lfs.attributes(path, "mode") == "file" then return end -- another vmlua fetched it meanwhile
    fetch(job, path .. ".part")
    local renamed, why = os.rename(path .. ".part", path)
    if not renamed then fail(job, "%s", why) end
    write_sidecar(path .. ".url", job.url)
  end)
  os.remove(path .. ".lock")
  held:unlock()
  if not ok then error(err, 0) end
  return path
end

-- A file:// URL's path, with its %XX escapes decoded.
local function file_path(url)
  local path = url:match("^file://[^/]*(/.*)$")
  return path and (path:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function verify_local(job, path)
  local mode = lfs.attributes(path, "mode")
  if mode ~= "file" then
    fail(job, "%s", mode and (path .. " is a " .. mode .. ", not a file") or ("no such file: " .. path))
  end
  local got, why = image.sha256(path)
  if not got then fail(job, "%s", why) end
  if got ~= job.sha256 then fail(job, "wrong checksum: expected sha256 %s, got %s", job.sha256, got) end
  return path
end

-- vmlua.image{url=, sha256=} -> the image's local path (see the top).
image.get = fields.entry(function(where, spec)
  if type(spec) ~= "table" then
    errors.raise(string.format("%s: vmlua.image: expected a table { url = , sha256 = }, got %s",
                               fields.location(where), fields.describe(spec)))
  end
  fields.check(spec, { "url", "sha256" }, where, "vmlua.image")
  local url, sha256 = spec.url, spec.sha256
  if type(url) ~= "string" or url == "" then
    fields.fail(where, "url", "expected a URL (http, https, file) or a path, got %s", fields.describe(url))
  end
  if type(sha256) ~= "string" or not sha256:match("^" .. string.rep("%x", 64) .. "$") then
    fields.fail(where, "sha256", "expected the image's SHA-256 as 64 hex digits, got %s", fields.describe(sha256))
  end
  local job = { where = where, url = url, sha256 = sha256:lower() }
  local scheme = url:match("^(%a[%w+.-]*)://")
  if scheme == nil then return verify_local(job, fields.resolve(where, url)) end
  scheme = scheme:lower()
  if scheme == "file" then
    local path = file_path(url)
    if not path then fields.fail(where, "url", "%q: a file URL needs an absolute path (file:///...)", url) end
    return verify_local(job, path)
  elseif scheme ~= "http" and scheme ~= "https" then
    fields.fail(where, "url", "%q: vmlua downloads http and https URLs (or reads file:// and paths)", url)
  end
  return download(job)
end)

return image
