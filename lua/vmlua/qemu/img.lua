-- qemu-img, and what a disk image's header says. qemu-img runs as a child
-- process from an argv array (never a shell), on the event loop: a task
-- waiting for it lets consoles and timers go on.
local core = require "vmlua.core"
local host = require "vmlua.host"
local task = require "vmlua.task"

local img = {}

img.timeout = 120 -- seconds for one qemu-img command

-- Runs `qemu-img args...`; returns its stdout, or nil and why it failed
-- (qemu-img's own words).
function img.run(args)
  local file = host.which("qemu-img")
  if not file then return nil, "qemu-img is not on PATH (Debian package qemu-utils)" end
  local argv = { file }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out, err = {}, {}
  return task.await(function(wake)
    local process, spawn_err
    process, spawn_err = core.spawn {
      file = file, args = argv,
      on_stdout = function(data) out[#out + 1] = data end,
      on_stderr = function(data) err[#err + 1] = data end,
      on_exit = function(code, signal)
        process:close()
        if code == 0 then return wake(table.concat(out)) end
        local words = table.concat(err):gsub("^qemu%-img: ", ""):gsub("%s+$", "")
        if words == "" then words = signal and ("killed by SIG" .. signal) or ("exit status " .. tostring(code)) end
        wake(nil, words)
      end,
    }
    if not process then return wake(nil, "cannot run qemu-img: " .. tostring(spawn_err)) end
    return function() process:close() end -- a timeout: closing kills it
  end, img.timeout)
end

-- Makes a new image: { path=, format=, size= (bytes, optional with a
-- backing file), backing= (path), backing_format= }.
function img.create(opts)
  local args = { "create", "-q", "-f", opts.format }
  if opts.backing then
    for _, a in ipairs { "-b", opts.backing, "-F", opts.backing_format } do args[#args + 1] = a end
  end
  args[#args + 1] = opts.path
  if opts.size then args[#args + 1] = tostring(opts.size) end
  return img.run(args)
end

-- Grows an image to `size` bytes (qemu-img refuses to shrink without --shrink,
-- which vmlua never passes).
function img.resize(path, format, size)
  return img.run { "resize", "-q", "-f", format, path, tostring(size) }
end

-- qemu-img info as a table (-U: also while a VM has the image open).
function img.info(path)
  local out, err = img.run { "info", "-U", "--output=json", path }
  if not out then return nil, err end
  return core.json_decode(out)
end

local QCOW2_MAGIC = "QFI\251"

-- The start of a file: nil, why when it cannot be read.
local function head(path, n)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read(n) or ""
  f:close()
  return data
end

-- "qcow2" or "raw", from the file's first bytes.
function img.format(path)
  local data, err = head(path, 4)
  if not data then return nil, err end
  return data == QCOW2_MAGIC and "qcow2" or "raw"
end

-- The qcow2 header fields vmlua reads: size and backing file name.
local function qcow2_header(path)
  local data, err = head(path, 32)
  if not data then return nil, err end
  if #data < 32 or data:sub(1, 4) ~= QCOW2_MAGIC then return nil, path .. " is not a qcow2 image" end
  local backing_offset, backing_size, _, size = string.unpack(">I8I4I4I8", data, 9)
  return { size = size, backing_offset = backing_offset, backing_size = backing_size }
end

-- The size the guest sees, in bytes: the file's size for raw, the header's
-- for qcow2.
function img.virtual_size(path, format)
  if format == "qcow2" then
    local h, err = qcow2_header(path)
    return h and h.size, err
  end
  local st, err = core.stat(path)
  return st and st.size, err
end

-- The backing file a qcow2 image names (absolute: a relative name is
-- relative to the image's directory), or nil when it has none.
function img.backing(path)
  local h, err = qcow2_header(path)
  if not h then return nil, err end
  if h.backing_offset == 0 or h.backing_size == 0 then return nil end
  local f = assert(io.open(path, "rb"))
  f:seek("set", h.backing_offset)
  local name = f:read(h.backing_size)
  f:close()
  if name:sub(1, 1) ~= "/" then name = (path:match("^(.*)/[^/]*$") or ".") .. "/" .. name end
  return name
end

return img
