-- Private Ethernet networks between VMs: vmlua.lan { name = "lab" }.
--
-- Every VM on a LAN, of one script or of several vmlua processes (detached
-- instances too), plugs into one VDE switch (vde_switch, Debian package
-- vde-switch) through QEMU's vde netdev. The switch and its sockets live in
-- RUNTIME/.lan/NAME/ inside vmlua's private (0700) runtime directory, so
-- other users cannot join; the leading dot keeps the directory out of the
-- VM names that `vmlua ls` lists.
--
-- No daemon is ever orphaned: the switch reads its standard input, a FIFO
-- (RUNTIME/.lan/NAME/hold), and exits at its end of file. Each QEMU on the
-- LAN holds the FIFO open for writing (a -chardev file on it, with no
-- device), and so does the vmlua that starts a VM, until its QEMU runs. When
-- the last QEMU ends, however it ends (stopped, killed, its vmlua killed and
-- its guard powering it off), the kernel closes its end and the switch exits
-- and removes its sockets.
--
-- Each VM on a LAN has a MAC address derived from its name and the LAN's
-- (locally administered, unicast), so a guest's address configuration
-- survives restarts.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"

local lan = {
  candidates = { "/usr/bin/vde_switch", "/usr/sbin/vde_switch", "/usr/local/bin/vde_switch",
                 "/opt/homebrew/bin/vde_switch" },
  package = "vde-switch",
  ready_timeout = 15,
  max_name = 32,
}

-- Why `name` cannot name a LAN, or nil: the rules of a VM name (it becomes
-- a directory holding sockets), and at most lan.max_name characters.
function lan.name_problem(name)
  if type(name) ~= "string" then return nil end
  local problem = runtime.name_problem(name)
  if problem then return problem end
  if #name > lan.max_name then
    return string.format("%q is longer than %d characters", name, lan.max_name)
  end
  return nil
end

-- The files of LAN `name` under `root` (default runtime.root()).
function lan.paths(name, root)
  local dir = (root or runtime.root()) .. "/.lan/" .. name
  return {
    dir = dir,
    switch = dir .. "/switch", -- vde_switch's socket directory: QEMU's sock=
    ctl = dir .. "/switch/ctl",
    hold = dir .. "/hold", -- the FIFO whose end of file ends the switch
  }
end

-- The longest socket the switch makes is SWITCH/NNN.FD (a port's data socket).
function lan.socket_problem(name, root)
  local longest = lan.paths(name, root).switch .. "/032.1023"
  if #longest <= runtime.max_socket_path then return nil end
  return string.format("the LAN's sockets (%s) would not fit in a Unix socket address (%d bytes at most); "
    .. "use a shorter name or set VMLUA_RUNTIME_DIR to a shorter directory", longest, runtime.max_socket_path)
end

-- 64-bit FNV-1a of a string (Lua integers wrap, as the hash wants).
local function fnv1a(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 1099511628211
  end
  return h
end

-- The MAC address of VM `vm_name` on LAN `lan_name`: 02 (locally
-- administered, unicast) and five bytes of a hash of both names.
function lan.mac(vm_name, lan_name)
  local h = fnv1a(vm_name .. "\0" .. lan_name)
  local bytes = { 0x02 }
  for i = 1, 5 do bytes[i + 1] = (h >> (8 * (i - 1))) & 0xff end
  return string.format("%02x:%02x:%02x:%02x:%02x:%02x", table.unpack(bytes))
end

-- The vde_switch binary, or nil.
function lan.binary()
  for _, file in ipairs(lan.candidates) do
    if core.executable(file) then return file end
  end
  return require("vmlua.host").which("vde_switch")
end

-- Why LANs cannot run on this host, or nil.
function lan.problem()
  if lan.binary() then return nil end
  return string.format("a LAN needs vde_switch (Debian package %s), which is not installed", lan.package)
end

-- The switch's argv (its stdin is the hold FIFO).
function lan.switch_command(name, root)
  local p = lan.paths(name, root)
  local file = lan.binary() or "vde_switch"
  return { file = file, args = { file, "--sock", p.switch, "--mode", "0600", "--dirmode", "0700" } }
end

-- QEMU's arguments for the net device `n` (a LAN) with the id `id`; `add`
-- appends arguments, `escape` quotes a value inside an option string, and
-- `placement` (or nil) ends the device's options (libvirt's bus and slot).
function lan.qemu_args(n, id, add, escape, placement)
  local p = lan.paths(n.name)
  add("-chardev", string.format("file,id=%s-hold,path=%s", id, escape(p.hold)))
  add("-netdev", string.format("vde,id=%s,sock=%s", id, escape(p.switch)))
  add("-device", string.format("virtio-net-pci,netdev=%s,mac=%s%s", id, n.mac, placement or ""))
end

-- Whether a switch listens on the LAN's control socket now.
local function listening(p)
  local stream = task.await(function(wake)
    core.connect(p.ctl, function(s) wake(s) end)
  end, 5)
  if stream then stream:close() end
  return stream ~= nil
end

local function make_dirs(p)
  local root = p.dir:match("^(.*)/%.lan/[^/]+$")
  for _, dir in ipairs { root, root .. "/.lan", p.dir } do
    local ok, why = core.mkdir_private(dir)
    if not ok then return nil, "cannot use the directory " .. why end
  end
  return true
end

local function make_fifo(p)
  if core.stat(p.hold) then return true end
  local _, status, err = require("vmlua.exec").run({ "mkfifo", "-m", "600", p.hold }, { timeout = 10 })
  if status ~= 0 and not core.stat(p.hold) then
    return nil, "cannot make the FIFO " .. p.hold .. ": " .. err:gsub("%s+$", "")
  end
  return true
end

lan.started = {} -- the switches this process started: held, so they are reaped when they end

-- Starts the LAN's switch, its stdin the FIFO that `hold` keeps open, and
-- waits until it answers a command. Another vmlua may start one at the same
-- time: one binds the control socket, the other exits, and both LANs are one.
local function start_switch(name, p, hold)
  os.remove(p.ctl) -- left by a switch that was killed (vde_switch refuses a socket in use)
  local cmd = lan.switch_command(name)
  local said, proc, err = "", nil, nil
  local ok, why = task.await(function(wake)
    proc, err = core.spawn {
      file = cmd.file, args = cmd.args, stdin = p.hold, detached = true,
      on_stdout = function(data)
        said = (said .. data):sub(-4096)
        if said:find("1000 Success", 1, true) then wake(true) end
      end,
      on_stderr = function(data) said = (said .. data):sub(-4096) end,
      on_exit = function(code, signal)
        lan.started[proc] = nil
        wake(nil, signal and ("was killed by SIG" .. signal) or ("exited with status " .. tostring(code)))
      end,
    }
    if not proc then return wake(nil, err) end
    lan.started[proc] = true
    hold:write("showinfo\n") -- answered once the switch listens
    hold:flush()
  end, lan.ready_timeout)
  if ok then return true end
  if listening(p) then return true end -- another vmlua's switch won
  if why == "timeout" then why = string.format("did not answer within %g s", lan.ready_timeout) end
  local words = said:gsub("%s+$", ""):match("[^\n]*$")
  return nil, string.format("vde_switch %s%s", why, words ~= "" and (": " .. words) or "")
end

local joining = {} -- LAN name -> true while a task of this process joins it
local joined = task.condition()

-- Joins LAN `name`: makes sure its switch runs and keeps it running until
-- lan.release (by then QEMU holds it). Returns the hold, or nil and why.
function lan.join(name)
  joined.wait(function() return not joining[name] end)
  joining[name] = true
  local ok, hold, err = pcall(function()
    local p = lan.paths(name)
    local made, why = make_dirs(p)
    if made then made, why = make_fifo(p) end
    if not made then return nil, why end
    local f, ferr = io.open(p.hold, "r+") -- read and write: never waits for the other end
    if not f then return nil, "cannot open " .. tostring(ferr) end
    if not listening(p) then
      local started, serr = start_switch(name, p, f)
      if not started then
        f:close()
        return nil, serr
      end
    end
    return f
  end)
  joining[name] = nil
  joined.notify()
  if not ok then error(hold, 0) end
  return hold, err
end

-- Joins every LAN of the configuration: the holds, or nil and why (naming
-- the device). Nothing is held on failure.
function lan.join_all(cfg)
  local holds = {}
  for i, n in ipairs(cfg.net) do
    if n.kind == "lan" then
      local hold, err = lan.join(n.name)
      if not hold then
        lan.release(holds)
        return nil, string.format("net[%d]: LAN %s: %s", i, n.name, err)
      end
      holds[#holds + 1] = hold
    end
  end
  return holds
end

-- Lets go of the holds lan.join_all took (QEMU holds the LANs from now on).
function lan.release(holds)
  for _, f in ipairs(holds or {}) do pcall(f.close, f) end
end

-- Whether the switch of LAN `name` runs now.
function lan.running(name)
  return listening(lan.paths(name))
end

return lan
