-- Host commands and ports from a script, on the event loop: while they
-- wait, consoles are read and other tasks run (os.execute and io.popen
-- block the whole loop, and a guest writing to its console then waits for
-- the script).
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local task = require "vmlua.task"

local exec = {}

local function options(name, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    errors.raise(string.format("%s: the options must be a table, got %s", name, fields.describe(opts)), 4)
  end
  for k in pairs(opts) do
    if not known[k] then
      errors.raise(string.format("%s: unknown option %s", name, fields.describe(k)), 4)
    end
  end
  local t = opts.timeout
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    errors.raise(string.format("%s: timeout must be a number of seconds, got %s", name, fields.describe(t)), 4)
  end
  return opts
end

-- vmlua.exec(argv [, { timeout = S, stdin = PATH }]) -> stdout, status, stderr.
-- argv is an array (no shell): argv[1] is looked up on PATH. status is
-- the exit status, or 128 + the signal's number as a shell says it.
-- Raises when the command cannot run or times out (it is then killed).
function exec.run(argv, opts)
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    errors.raise("vmlua.exec: expected an argv array such as { \"ssh\", \"-V\" }, got " .. fields.describe(argv), 2)
  end
  opts = options("vmlua.exec", opts, { timeout = true, stdin = true })
  local args = {}
  for i, a in ipairs(argv) do
    if type(a) ~= "string" and type(a) ~= "number" then
      errors.raise(string.format("vmlua.exec: argv[%d] must be a string, got %s", i, fields.describe(a)), 2)
    end
    args[i] = tostring(a)
  end
  local file = require("vmlua.host").which(args[1]) or args[1]
  local out, err, process = {}, {}, nil
  local ok, code, signal = task.await(function(wake)
    local why
    process, why = core.spawn {
      file = file, args = args, stdin = opts.stdin,
      on_stdout = function(d) out[#out + 1] = d end,
      on_stderr = function(d) err[#err + 1] = d end,
      on_exit = function(c, s) wake(true, c, s) end,
    }
    if not process then wake(false, why) end
  end, opts.timeout)
  if ok == false then errors.raise("vmlua.exec: " .. tostring(code), 2) end
  if ok == nil then
    process:close() -- kills it
    errors.raise(string.format("vmlua.exec: %s timed out after %g s", args[1], opts.timeout), 2)
  end
  process:close()
  local SIG = { HUP = 1, INT = 2, QUIT = 3, KILL = 9, SEGV = 11, PIPE = 13, ALRM = 14, TERM = 15, ABRT = 6 }
  local status = signal and 128 + (SIG[signal] or 0) or code
  return table.concat(out), status, table.concat(err)
end

-- vmlua.wait_port(address, port [, { timeout = S, banner = PATTERN }]) -> true.
-- Waits until a TCP connection to address:port succeeds and, with banner,
-- until what the server sends first matches the Lua pattern ("^SSH%-" for
-- an sshd behind a forward, which accepts before the guest listens).
-- Raises when the timeout (default 60 s) passes first.
function exec.wait_port(address, port, opts)
  if type(address) ~= "string" or math.type(port) ~= "integer" then
    errors.raise(string.format("vmlua.wait_port: expected an address and a port, got %s, %s",
                               fields.describe(address), fields.describe(port)), 2)
  end
  opts = options("vmlua.wait_port", opts, { timeout = true, banner = true })
  local timeout = opts.timeout or 60
  local deadline = core.now() + timeout
  local last = "nothing answered"
  while true do
    local left = deadline - core.now()
    if left <= 0 then break end
    local stream, err = task.await(function(wake)
      local gave_up = false
      local _, failed = core.connect_tcp(address, port, function(s, e)
        if gave_up then
          if s then s:close() end
        else
          wake(s, e)
        end
      end)
      if failed then wake(nil, failed) end
      return function() gave_up = true end
    end, left)
    if stream and not opts.banner then
      stream:close()
      return true
    elseif stream then
      local got = ""
      local seen = task.await(function(wake)
        stream:read(function(data)
          if not data then return wake(false) end
          got = got .. data
          if got:find(opts.banner) then wake(true) end
        end)
      end, math.max(0, deadline - core.now()))
      stream:close()
      if seen then return true end
      last = got ~= "" and string.format("it sent %q", got:sub(1, 60)) or "it closed the connection"
    else
      last = tostring(err)
    end
    task.sleep(math.min(0.2, math.max(0, deadline - core.now())))
  end
  errors.raise(string.format("vmlua.wait_port: %s:%d did not answer%s within %g s (%s)", address, port,
    opts.banner and (" with " .. opts.banner) or "", timeout, last), 2)
end

return exec
