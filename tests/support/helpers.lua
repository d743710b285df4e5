-- Helpers for the unit specs: temporary directories, small files, and
-- definitions run from a real file so that their file:line is known.
local core = require "vmlua.core"

local helpers = {}

local function shell_quote(s)
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

-- A new private directory; its real path, so messages can be predicted.
function helpers.tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(core.mkdir_private(name))
  return assert(core.realpath(name))
end

function helpers.rmtree(dir)
  assert(dir:match("^/.+/."), "refusing to remove " .. dir)
  os.execute("rm -rf " .. shell_quote(dir))
end

-- The lines a shell command prints, sorted.
function helpers.sorted_lines(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  table.sort(out)
  return out
end

-- Runs a shell command: whether it succeeded, and what it printed (stderr too).
function helpers.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

function helpers.write(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content or "")
  f:close()
  return path
end

-- The files a valid definition refers to: vmlinuz, initrd.img, root.img.
function helpers.fixtures(dir)
  helpers.write(dir .. "/vmlinuz", "not a real kernel\n")
  helpers.write(dir .. "/initrd.img", "not a real initrd\n")
  helpers.write(dir .. "/root.img", string.rep("\0", 4096))
end

-- Writes `src` to DIR/NAME (default def.lua) and runs it like a file;
-- returns pcall's results.
function helpers.run(dir, src, name)
  local path = helpers.write(dir .. "/" .. (name or "def.lua"), src)
  local chunk, err = loadfile(path)
  if not chunk then return false, err end
  return pcall(chunk)
end

-- The error a definition raises (fails the spec when it raises none).
function helpers.error_of(dir, src, name)
  local ok, err = helpers.run(dir, src, name)
  assert(not ok, "the definition did not fail")
  return err
end

-- The VM a definition returns.
function helpers.vm(dir, src, name)
  local ok, vm = helpers.run(dir, src, name)
  assert(ok, vm)
  return vm
end

helpers.shell_quote = shell_quote

-- The local addresses listening on TCP port `port` (from /proc/net/tcp),
-- as the kernel writes them ("0100007F" is 127.0.0.1).
function helpers.listeners(port)
  local found = {}
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file)
    if f then
      for line in f:lines() do
        local addr, p, state = line:match("^%s*%d+: (%x+):(%x+) %x+:%x+ (%x+)")
        if addr and tonumber(p, 16) == port and state == "0A" then found[#found + 1] = addr end
      end
      f:close()
    end
  end
  return found
end

-- An HTTP GET of / from 127.0.0.1:`port` through bash's /dev/tcp: the
-- body, or all that came back when it has no header.
function helpers.http_get(port)
  local p = assert(io.popen("timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. port ..
                            " && printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3 && cat <&3' 2>&1"))
  local response = p:read("a")
  p:close()
  return response:match("\r\n\r\n(.*)$") or response
end

return helpers
