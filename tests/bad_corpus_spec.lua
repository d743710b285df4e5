-- The corpus of bad definitions: `vmlua plan FILE` on each must fail
-- cleanly (exit status 1: never a signal, a crash or a sanitizer report) with a message
-- that starts with "vmlua: " and names the file, line and field.
--
-- Each tests/bad/NN-what.lua starts with
--   -- expect: TEXT [... TEXT ...]
-- and every TEXT must appear, in order, on the first line of the output.
--
-- VMLUA_BIN runs another build (e.g. one with ASan); VMLUA_WRAP is put
-- before the command (e.g. "valgrind -q --error-exitcode=99").
local helpers = require "support.helpers"

local BIN = os.getenv("VMLUA_BIN") or "build/bin/vmlua"
local WRAP = os.getenv("VMLUA_WRAP") or ""
local DIR = "tests/bad"

local function corpus()
  local files = {}
  local p = assert(io.popen("ls -1 " .. helpers.shell_quote(DIR)))
  for name in p:lines() do
    if name:match("^%d+%-[%w%-]+%.lua$") then files[#files + 1] = name end
  end
  p:close()
  table.sort(files)
  return files
end

local function expectations(path)
  local f = assert(io.open(path))
  local first = f:read("l")
  f:close()
  local text = first and first:match("^%-%- expect: (.+)$")
  assert(text, path .. ": the first line must be -- expect: TEXT")
  local parts = {}
  for part in (text .. " ... "):gmatch("(.-) %.%.%. ") do parts[#parts + 1] = part end
  return parts
end

-- Runs `vmlua plan FILE`; returns its output (stdout and stderr) and how it ended.
local function plan(path)
  local cmd = string.format("%s %s plan %s 2>&1", WRAP, helpers.shell_quote(BIN), helpers.shell_quote(path))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, how, code = p:close()
  return out, how, code
end

describe("the bad corpus", function()
  local files = corpus()

  it("has at least 22 definitions", function()
    assert.is_true(#files >= 22, "only " .. #files .. " bad definitions")
  end)

  for _, name in ipairs(files) do
    it(name, function()
      local path = DIR .. "/" .. name
      local out, how, code = plan(path)
      assert.equal("exit", how, "vmlua ended by a signal: " .. out)
      assert.equal(1, code, "exit status " .. tostring(code) .. " (a sanitizer or a crash?): " .. out)
      local line = out:match("^[^\n]*")
      assert.equal("vmlua: ", line:sub(1, 7), "the message does not start with 'vmlua: ': " .. out)
      local at = 1
      for _, part in ipairs(expectations(path)) do
        local s, e = line:find(part, at, true)
        assert(s, string.format("%s: expected %q in:\n%s", name, part, line))
        at = e + 1
      end
    end)
  end
end)
