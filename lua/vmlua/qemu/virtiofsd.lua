-- Shared folders through virtio-fs: one QEMU virtiofsd per vmlua.share{},
-- started before QEMU and ended with it.
--
-- QEMU's own virtiofsd (Debian: /usr/lib/qemu/virtiofsd, in
-- qemu-system-common) serves a host directory on a vhost-user socket in the
-- VM's runtime directory; QEMU connects to it (-chardev socket, client side)
-- and gives the guest a vhost-user-fs-pci device with the share's tag. It
-- runs as root, in its own namespace sandbox (pivot_root into the
-- directory). This virtiofsd has no read-only mode: a read-only share runs it
-- in a private mount namespace where the directory is a read-only bind mount
-- (core.spawn's readonly), so the guest's writes fail with EROFS.
--
-- It never outlives the VM: it exits when QEMU disconnects (QEMU ended, or
-- was killed), vmlua kills it when the VM ends, and, spawned as vmlua's
-- child, it gets SIGTERM if vmlua dies.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"

local virtiofsd = {}

virtiofsd.candidates = { "/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd" }
virtiofsd.package = "qemu-system-common"
virtiofsd.ready_timeout = 10

-- The virtiofsd binary, or nil.
function virtiofsd.binary()
  for _, file in ipairs(virtiofsd.candidates) do
    if core.can_open(file, "r") then return file end
  end
  return nil
end

-- Why shares cannot run on this host, or nil; `by_libvirt`: libvirtd runs
-- the daemon, so vmlua itself needs no root.
function virtiofsd.problem(by_libvirt)
  if not virtiofsd.binary() then
    return string.format("shares need QEMU's virtiofsd (Debian package %s), which is not at %s",
      virtiofsd.package, table.concat(virtiofsd.candidates, " or "))
  elseif core.getuid() ~= 0 and not by_libvirt then
    return "shares need root: QEMU's virtiofsd runs only as root (it sandboxes itself in namespaces)"
  end
  return nil
end

-- The argv of the daemon for share `s` (the i-th) of a VM with `paths`:
-- { file=, args=, socket=, readonly= (the directory it sees read-only, or nil) }.
function virtiofsd.command(s, i, paths)
  local file = virtiofsd.binary() or virtiofsd.candidates[1]
  local socket = runtime.share_socket(paths, i)
  local source = s.host:gsub("[\\,]", "\\%0") -- virtiofsd splits -o at commas; a backslash escapes one
  return {
    file = file,
    args = { file, "--socket-path=" .. socket, "-o", "source=" .. source, "-o", "cache=auto",
             "-o", "sandbox=namespace" },
    socket = socket,
    readonly = s.readonly and s.host or nil,
  }
end

-- The daemons map the guest's memory: QEMU's memory backend for a VM with
-- shares (its -machine names it with memory-backend=mem).
function virtiofsd.memory_backend(cfg, mib)
  if #(cfg.shares or {}) == 0 then return nil end
  return string.format("memory-backend-memfd,id=mem,size=%dM,share=on", mib)
end

-- QEMU's arguments for the shares, a device per share; `add` appends
-- arguments and `escape` quotes a value inside an option string.
function virtiofsd.qemu_args(cfg, paths, add, escape)
  for i, s in ipairs(cfg.shares or {}) do
    local id = "fs" .. (i - 1)
    add("-chardev", string.format("socket,id=%s,path=%s", id, escape(runtime.share_socket(paths, i))))
    add("-device", string.format("vhost-user-fs-pci,chardev=%s,tag=%s", id, escape(s.tag)))
  end
end

-- Starts one daemon and waits until it listens: the process, or nil and why.
local function start_one(s, i, paths)
  local cmd = virtiofsd.command(s, i, paths)
  os.remove(cmd.socket)
  local said, proc, err = "", nil, nil
  local ok, why = task.await(function(wake)
    local function heard(data)
      said = (said .. data):sub(-4096)
      if said:find("Waiting for vhost-user socket connection", 1, true) then wake(true) end
    end
    proc, err = core.spawn {
      file = cmd.file, args = cmd.args, readonly = cmd.readonly,
      on_stdout = heard, on_stderr = heard,
      on_exit = function(code, signal) wake(nil, signal and ("was killed by SIG" .. signal)
                                                  or ("exited with status " .. tostring(code))) end,
    }
    if not proc then wake(nil, err) end
  end, virtiofsd.ready_timeout)
  if ok then return proc end
  if proc then proc:close() end
  local words = said:gsub("%s+$", ""):match("[^\n]*$")
  if why == "timeout" then why = string.format("did not listen within %g s", virtiofsd.ready_timeout) end
  return nil, string.format("virtiofsd for %s %s%s", s.host, why, words ~= "" and (": " .. words) or "")
end

-- Starts a daemon per share of cfg (or per share for which `which(share)`
-- holds): the list of processes, or nil and why (naming the share).
-- Nothing is left running on failure.
function virtiofsd.start(cfg, paths, which)
  local list = {}
  for i, s in ipairs(cfg.shares or {}) do
    if not which or which(s) then
      local proc, err = start_one(s, i, paths)
      if not proc then
        virtiofsd.stop(list)
        return nil, string.format("shares[%d]: %s", i, err)
      end
      list[#list + 1] = proc
    end
  end
  return list
end

-- Ends the daemons (they have nothing to flush: the guest's writes are
-- the host's system calls) and reaps them.
function virtiofsd.stop(list)
  for _, proc in ipairs(list or {}) do proc:close() end
end

return virtiofsd
