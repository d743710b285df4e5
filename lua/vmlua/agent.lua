--- The QEMU guest agent: `agent = true` in vmlua.vm{} gives the guest a
-- virtio-serial port named org.qemu.guest_agent.0, which qemu-guest-agent
-- in the guest opens, and vm:run runs commands through it (guest-exec) when
-- the agent answers, as tart runs commands through its agent. QEMU listens
-- on the port's host end (the VM's runtime directory, qga.sock) and serves
-- one client at a time: vmlua connects for each run. The protocol is one
-- JSON object a line each way, no ids: replies come in order. After a
-- connect, guest-sync-delimited flushes what an earlier client left: its
-- reply starts with a 0xFF byte, and 0xFF sent to the agent resets its
-- parser. Requests sent before the agent opens its port wait in the socket
-- until it does, so waiting for the agent needs no polling; only
-- guest-exec-status has to be asked until the command has exited.
-- @module vmlua.agent
local core = require "vmlua.core"
local task = require "vmlua.task"

local agent = {
  PORT = "org.qemu.guest_agent.0",
  CHARDEV = "agent", -- the chardev's id, in query-chardev
  poll_first = 0.01, poll_max = 0.2, -- seconds between guest-exec-status asks
}

-- The QEMU arguments of the channel, for qemu.command.
function agent.qemu_args(paths, add, e)
  add("-device", "virtio-serial-pci,id=agent-serial")
  add("-chardev", "socket,id=" .. agent.CHARDEV .. ",path=" .. e(paths.agent) .. ",server=on,wait=off")
  add("-device", "virtserialport,bus=agent-serial.0,chardev=" .. agent.CHARDEV .. ",name=" .. agent.PORT
    .. ",id=agent-port") -- QMP's VSERPORT_CHANGE names it when the guest opens or closes the port
end

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local VALUE = {}
for i = 1, 64 do VALUE[ALPHABET:byte(i)] = i - 1 end

-- Base64 (RFC 4648, padded): the agent's out-data, err-data and input-data.
function agent.base64_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local quad = ""
    for shift = 18, 0, -6 do
      local k = ((n >> shift) & 63) + 1
      quad = quad .. ALPHABET:sub(k, k)
    end
    out[#out + 1] = quad:sub(1, c and 4 or b and 3 or 2) .. (c and "" or b and "=" or "==")
  end
  return table.concat(out)
end

-- The bytes of base64 text (line breaks ignored), or nil and why.
function agent.base64_decode(s)
  s = s:gsub("[\r\n]", "")
  if #s % 4 ~= 0 or s:find("[^%w+/=]") or s:find("=[^=]") or s:find("===") then
    return nil, "not base64"
  end
  local out = {}
  for i = 1, #s, 4 do
    local n, pad = 0, 0
    for k = 0, 3 do
      local ch = s:byte(i + k)
      if ch == 61 then pad = pad + 1 end -- "="
      n = (n << 6) | (VALUE[ch] or 0)
    end
    local bytes = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
    out[#out + 1] = bytes:sub(1, 3 - pad)
  end
  return table.concat(out)
end

-- One request line.
function agent.request(command, arguments)
  return core.json_encode({ execute = command, arguments = arguments }) .. "\n"
end

-- Splits what the agent sends into messages. After resync(), everything
-- up to the next 0xFF byte is dropped (stale replies, a parse error for the
-- 0xFF sent to the agent). feed(data) returns the decoded messages.
function agent.reader()
  local r = { buffer = "", skipping = false }
  function r.resync()
    r.skipping, r.buffer = true, ""
  end
  function r.feed(data)
    local messages = {}
    r.buffer = r.buffer .. data
    while true do
      if r.skipping then
        local at = r.buffer:find("\255", 1, true)
        if not at then r.buffer = "" break end
        r.skipping, r.buffer = false, r.buffer:sub(at + 1)
      end
      local line, rest = r.buffer:match("^([^\n]*)\n(.*)$")
      if not line then break end
      r.buffer = rest
      line = line:gsub("\255", "")
      if line:find("%S") then
        local msg = core.json_decode(line)
        messages[#messages + 1] = type(msg) == "table" and msg or { bad = line }
      end
    end
    return messages
  end
  return r
end

-- What vm:run's command runs as: `sh -c SCRIPT`, with stderr merged into
-- stdout (as on the console) and the home directory as the working one.
function agent.script(command)
  return 'exec 2>&1; HOME="${HOME:-/root}"; export HOME; cd "$HOME" 2>/dev/null || cd /\n' .. command
end

-- Kills a command (by the pid guest-exec gave) and what it started.
agent.KILL_SCRIPT = 'k() { for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do k "$c"; done; ' ..
                    'kill -KILL "$1" 2>/dev/null; }; k "$1"'

-- A finished guest-exec-status result as vm:run returns it: output, exit
-- status (128 + the signal's number when a signal ended it, as a shell
-- says), and whether the agent cut the output short.
function agent.outcome(result)
  local out = agent.base64_decode(result["out-data"] or "") or ""
  local err = agent.base64_decode(result["err-data"] or "") or ""
  local status = math.tointeger(result.exitcode)
  if result.signal then status = 128 + math.tointeger(result.signal) end
  return out .. err, status or -1, result["out-truncated"] == true or result["err-truncated"] == true
end

-- Whether the console waits at a getty's login prompt: then nothing reads
-- commands typed there.
function agent.at_login(tail)
  local last = (tail or ""):gsub("[\r\n%s]+$", ""):match("([^\r\n]*)$") or ""
  return last:find("[Ll]ogin:$") ~= nil
end

local Client = {}
Client.__index = Client
agent.Client = Client -- libvirt/agent.lua's client shares its run

-- Connects to the agent's socket: a client, or nil and why.
function agent.connect(path, timeout)
  local late = false
  local ok, stream, err = pcall(task.await, function(wake)
    core.connect(path, function(s, e)
      if late and s then s:close() return end
      wake(s, e)
    end)
  end, timeout)
  if not (ok and stream) then
    late = true
    if not ok then error(stream, 0) end -- interrupted
    return nil, err == "timeout" and "no connection" or tostring(err)
  end
  local self = setmetatable({ stream = stream, reader = agent.reader(), open = true }, Client)
  stream:read(function(data)
    if data then self:_feed(data) else self:close("the agent's connection closed") end
  end)
  return self
end

function Client:_feed(data)
  for _, msg in ipairs(self.reader.feed(data)) do
    if self.syncing then
      if msg["return"] == self.syncing then
        self.syncing = nil
        if self.waiter then self.waiter(true) end
      else
        self.reader.resync() -- a stale reply: wait for the next 0xFF
      end
    elseif self.waiter then
      self.waiter(msg)
    end -- else a reply nobody waits for any more
  end
end

function Client:_await(text, timeout)
  if not self.open then return nil, self.why end
  return task.await(function(wake)
    self.waiter = wake
    self.stream:write(text)
    return function() self.waiter = nil end
  end, timeout)
end

--- Flushes the channel (guest-sync-delimited) and waits until the agent answers.
-- @tparam number timeout seconds
-- @return true, or nil and why ("timeout" when the agent did not answer)
function Client:sync(timeout)
  self.syncing = math.random(1, 0x7fffffff)
  self.reader.resync()
  local ok, err = self:_await("\255" .. agent.request("guest-sync-delimited", { id = self.syncing }), timeout)
  self.waiter = nil
  if not ok then self:close(err) end
  return ok, err
end

--- Sends a command and waits for its reply.
-- @tparam string command the agent's command ("guest-info", ...)
-- @tparam[opt] table arguments its arguments
-- @tparam number timeout seconds
-- @return its result, or nil and why
function Client:execute(command, arguments, timeout)
  local msg, err = self:_await(agent.request(command, arguments), timeout)
  self.waiter = nil
  if not msg then
    self:close(err) -- the reply may come later: the channel is out of step
    return nil, err
  elseif msg.error then
    return nil, string.format("%s: %s", tostring(msg.error.class or "Error"), tostring(msg.error.desc))
  elseif msg.bad then
    return nil, "a reply that is not JSON: " .. msg.bad
  end
  return msg["return"]
end

--- Runs a shell command in the guest (guest-exec), polling guest-exec-status until it exits.
-- When the deadline passes, or the wait is interrupted, the command is killed.
-- @tparam string command a shell command
-- @tparam number deadline core.now() by which it must end
-- @tparam[opt] string input what its stdin reads (else it reads nothing)
-- @treturn string|nil output (stdout and stderr), or nil
-- @treturn integer|string exit status, or why ("timeout": it was killed)
-- @treturn boolean whether the agent cut the output short
function Client:run(command, deadline, input)
  local function left() return math.max(0, deadline - core.now()) end
  local started, err = self:execute("guest-exec", {
    path = "/bin/sh", arg = { "-c", agent.script(command) },
    ["capture-output"] = true, ["input-data"] = input and agent.base64_encode(input) or nil }, left())
  if not started then return nil, err == "timeout" and "it did not answer guest-exec in time" or err end
  local pid = started.pid
  local pause = agent.poll_first
  local ok, out, status, cut = pcall(function()
    while true do
      local result, serr = self:execute("guest-exec-status", { pid = pid }, left())
      if not result then return nil, serr end
      if result.exited then return agent.outcome(result) end
      if left() <= 0 then return nil, "timeout" end
      task.sleep(math.min(pause, left()))
      pause = math.min(pause * 2, agent.poll_max)
    end
  end)
  if not ok then -- interrupted: kill it, by a task of its own
    self:close("interrupted")
    task.spawn(self.kill, self, pid)
    error(out, 0)
  elseif status == "timeout" then
    self:close("timeout")
    self:kill(pid)
  end
  return out, status, cut
end

-- Kills the guest-exec command `pid` over a connection of its own.
function Client:kill(pid)
  if not self.path then return end
  local client = agent.connect(self.path, 5)
  if not client then return end
  if client:sync(5) then
    client:execute("guest-exec", { path = "/bin/sh", arg = { "-c", agent.KILL_SCRIPT, "sh", tostring(pid) } }, 5)
  end
  client:close()
end

--- Closes the connection; safe to call twice.
-- @tparam[opt] string why what a waiting call returns
function Client:close(why)
  if not self.open then return end
  self.open, self.why = false, why or "closed"
  self.stream:close()
  local waiter = self.waiter
  self.waiter = nil
  if waiter then waiter(nil, self.why) end
end

-- Opens a client to the agent at `path` and syncs: the client, or nil and why.
function agent.open(path, timeout)
  local deadline = core.now() + timeout
  local client, err = agent.connect(path, timeout)
  if not client then return nil, err end
  client.path = path
  local ok, synced, why = pcall(client.sync, client, math.max(0, deadline - core.now()))
  if not ok then -- interrupted
    client:close()
    error(synced, 0)
  end
  if not synced then return nil, why end
  return client
end

-- vm:run's way into the guest -----------------------------------------

local methods = {}
local machine -- vmlua.machine, set by agent.install

-- What vm:run does once its turn has come: the command through the guest
-- agent or through a shell on the console. A VM with agent = true races
-- the two (a probe typed on the console, unless it shows a login prompt,
-- against guest-sync on the agent's port), and the first that answers
-- runs this command and the rest of the boot's. Output and status, or nil
-- and the failure message.
function methods:_run_any(command, deadline, timeout, what)
  local answered = self:_answered()
  if not self.config.agent or answered.shell then return self:_run(command, deadline, timeout, what) end
  local via, client, tried = self:_way_in(deadline)
  if via == "shell" then
    answered.shell = true
    return self:_run(command, deadline, timeout, what)
  elseif via ~= "agent" then
    return nil, self:_neither(timeout, what, tried)
  end
  answered.agent = true
  local ok, out, status, cut = pcall(client.run, client, command, deadline)
  client:close()
  if not ok then error(out, 0) end -- interrupted: client.run killed the command
  if out then
    if cut then machine.notice(string.format("vm %s: the guest agent kept only the start of the output of %s",
                                             self.name, what)) end
    return out, status
  elseif status == "timeout" then
    return nil, self:_failure(string.format("timed out after %g s waiting for %s, run by the guest agent; "
                                            .. "killed it", timeout, what))
  end
  return nil, self:_failure(string.format("the guest agent did not run %s: %s", what, status))
end

-- Who answered vm:run during this boot: { agent = true, shell = true }.
function methods:_answered()
  if not self.answered or self.answered.boot ~= self.process then
    self.answered = { boot = self.process } -- a new QEMU (or an attached VM): ask again
  end
  return self.answered
end

-- Races the guest agent against a shell on the console until one answers
-- or the deadline passes: "agent" and a synced client, "shell", or nil,
-- nil and what was tried.
function methods:_way_in(deadline)
  local serial = self.serial
  local function left() return math.max(0, deadline - core.now()) end
  local tried = { probe = not self:_answered().agent and not agent.at_login(serial.tail) }
  local tasks, done, running = {}, false, 0
  local function contender(fn)
    return function(wake)
      running = running + 1
      local ok, via, client = pcall(fn)
      running = running - 1
      if ok and via and not done then
        wake(via, client)
      elseif ok and client then
        client:close()
      elseif running == 0 and not done then
        wake() -- both gave up early
      end
    end
  end
  local function race(wake)
    tasks[1] = task.spawn(contender(function()
      local client, why = machine.backend(self.config).agent(self, left())
      tried.agent = why
      return client and "agent", client
    end), wake)
    if tried.probe then
      tasks[2] = task.spawn(contender(function()
        self.runs = self.runs + 1
        local id = string.format("%x%x%04x", core.getpid(), self.runs, math.random(0, 0xffff))
        serial:send(string.format("printf '\\n<<vmlua:%%s:ready>>\\n' %s\n", id))
        return serial:read_until("<<vmlua:" .. id .. ":ready>>", left()) and "shell"
      end), wake)
    end
  end
  local ok, via, client = pcall(task.await, race, left())
  done = true
  for _, co in ipairs(tasks) do task.interrupt(co, "cancelled") end
  if not ok then error(via, 0) end -- interrupted
  if via then return via, client end
  return nil, nil, tried
end

-- Whether a chardev of QMP's query-chardev is the guest agent's: vmlua's
-- own (QEMU backend), or the one libvirt made for the port.
function agent.is_port(chardev)
  return chardev.label == agent.CHARDEV or tostring(chardev.filename):find(agent.PORT, 1, true) ~= nil
end

-- What the guest agent's port says: opened by the guest or not (QMP query-chardev).
function methods:_agent_port()
  local ok, chardevs = pcall(function() return self.qmp and self.qmp:execute("query-chardev", nil, 2) end)
  for _, c in ipairs(ok and type(chardevs) == "table" and chardevs or {}) do
    if agent.is_port(c) then
      return c["frontend-open"] and "answered nothing, though its port is open in the guest"
        or "never opened its port in the guest (is qemu-guest-agent installed and running?)"
    end
  end
  return "did not answer"
end

-- The failure when neither the guest agent nor a shell answered vm:run.
-- `tried`: probe (false: a login prompt showed, so nothing was typed), agent (why it failed).
function methods:_neither(timeout, what, tried)
  local ways = {}
  if not self.config.agent then
    ways[1] = "it has no guest agent channel (agent = true adds one, for a guest with qemu-guest-agent)"
  else
    ways[1] = "the guest agent on the virtio-serial port " .. agent.PORT .. " " .. self:_agent_port()
  end
  if tried and tried.probe == false then
    ways[2] = "nothing was typed on the console, which shows a login prompt"
  else
    ways[2] = "what vmlua typed on the console got no answer" ..
      (agent.at_login(self.serial and self.serial.tail) and " (it shows a login prompt)" or "")
  end
  return self:_failure(string.format("timed out after %g s waiting for %s: neither the guest agent nor a "
    .. "shell prompt on the console answered; %s; %s. vm:ssh(command) runs commands in a guest that has a "
    .. "login prompt (with ssh = { key = ... } and a forward to port 22)", timeout, what, ways[1], ways[2]))
end

-- Adds the methods to the VM class of `machine_module`.
function agent.install(VM, machine_module)
  machine = machine_module
  for name, fn in pairs(methods) do VM[name] = fn end
end

return agent
