-- The QEMU backend: what each guest architecture runs on, and the exact
-- argv for a normalized VM configuration. The argv is an array handed to
-- exec, never to a shell.
-- The modules of accelerators, disks, shares and cloud-init load when a VM
-- needs them: config.lua reads qemu.arches without them.
local host = require "vmlua.host"

local qemu = {}

local MiB = 1024 * 1024

-- Per guest architecture. `cpu` is the CPU model by accelerator: under TCG,
-- `-cpu max` on aarch64 emulates pointer authentication and boots about 2.7
-- times slower than cortex-a72. `max_cpus` is the machine type's limit.
qemu.arches = {
  x86_64 = {
    machine = "q35",
    cpu = { tcg = "max", kvm = "host", hvf = "host" },
    console = "ttyS0",
    max_cpus = 288,
    package = "qemu-system-x86",
    firmware = {
      "/usr/share/OVMF/OVMF_CODE_4M.fd",
      "/usr/share/OVMF/OVMF_CODE.fd",
      "/opt/homebrew/share/qemu/edk2-x86_64-code.fd",
      "/usr/local/share/qemu/edk2-x86_64-code.fd",
      "/usr/share/qemu/edk2-x86_64-code.fd",
    },
    firmware_package = "ovmf",
  },
  aarch64 = {
    machine = "virt",
    cpu = { tcg = "cortex-a72", kvm = "host", hvf = "host" },
    console = "ttyAMA0",
    max_cpus = 512,
    package = "qemu-system-arm",
    firmware = {
      "/usr/share/AAVMF/AAVMF_CODE.fd",
      "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
      "/usr/local/share/qemu/edk2-aarch64-code.fd",
      "/usr/share/qemu/edk2-aarch64-code.fd",
    },
    firmware_package = "qemu-efi-aarch64",
    -- Loaded with -bios under a Linux kernel, for ACPI (the power button).
    linux_firmware = {
      "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
      "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
      "/usr/local/share/qemu/edk2-aarch64-code.fd",
      "/usr/share/qemu/edk2-aarch64-code.fd",
    },
  },
}

-- The architectures this backend runs, sorted, for messages.
function qemu.supported()
  local list = {}
  for name in pairs(qemu.arches) do list[#list + 1] = name end
  table.sort(list, function(a, b) return a > b end) -- x86_64, aarch64
  return list
end

-- A value inside a QEMU option string ("key=value,key=value"): QEMU reads
-- ",," as a literal comma, so a path such as "a,b.img" cannot add options.
-- Not for -kernel, -initrd and -append, which QEMU takes verbatim.
function qemu.escape(s)
  return (tostring(s):gsub(",", ",,"))
end

-- qemu.accel(cfg) -> accel, why, warning|nil | nil, problem: the
-- accelerator the VM runs under (cfg.accel when it asks for one), why, and
-- what to tell the user when it starts.
function qemu.accel(cfg)
  return require("vmlua.accel").choose(cfg.arch, cfg.accel, cfg.accel_by)
end

local function machine_type(a, cfg, accel)
  if a.machine ~= "virt" then return a.machine end
  if accel == "kvm" then return "virt,gic-version=host" end
  if cfg.cpus > 8 then return "virt,gic-version=3" end -- GICv2 stops at 8 CPUs
  return "virt"
end

-- qemu.command(cfg, paths, chosen) -> { file = qemu-system-ARCH (full path
-- when on PATH), args = { argv0, ... } }. `paths` is runtime.paths(cfg.name);
-- the accelerator `chosen` defaults to qemu.accel(cfg)'s choice (or, where
-- that cannot be used, what cfg asks for).
-- The QMP sockets are client sockets: vmlua listens on them before QEMU
-- starts, and QEMU connects. The console is a pair of FIFOs, PATH.in and
-- PATH.out, that vmlua makes and opens before QEMU starts.
-- opts.incoming: the guest's state comes by migration ("defer": QEMU waits
-- for QMP migrate-incoming, see qemu/migration.lua) instead of a boot.
function qemu.command(cfg, paths, chosen, opts)
  local a = qemu.arches[cfg.arch]
  if not a then
    error(string.format("arch: %s is not supported (%s)", tostring(cfg.arch),
      table.concat(qemu.supported(), ", ")), 2)
  end
  local accel = chosen or qemu.accel(cfg) or cfg.accel
  local file = host.qemu_binary(cfg.arch) or ("qemu-system-" .. cfg.arch)
  local args = { file }
  local function add(...)
    for _, v in ipairs({ ... }) do args[#args + 1] = v end
  end
  local e = qemu.escape

  add("-name", e(cfg.name))
  local virtiofsd = #(cfg.shares or {}) > 0 and require "vmlua.qemu.virtiofsd"
  local memory = virtiofsd and virtiofsd.memory_backend(cfg, cfg.memory // MiB) -- shares map the guest's memory
  add("-machine", machine_type(a, cfg, accel) .. (memory and ",memory-backend=mem" or ""))
  add("-accel", accel)
  add("-cpu", a.cpu[accel] or "max")
  add("-smp", tostring(cfg.cpus))
  add("-m", tostring(cfg.memory // MiB))
  if memory then add("-object", memory) end
  add("-nodefaults", "-no-user-config", "-display", "none")
  if not cfg.reboot then add("-no-reboot") end -- a guest's reboot ends the VM

  local boot = cfg.boot
  if boot and boot.kind == "linux" then
    if boot.firmware then add("-bios", boot.firmware) end
    add("-kernel", boot.kernel)
    if boot.initrd then add("-initrd", boot.initrd) end
    add("-append", table.concat(boot.cmdline, " "))
  elseif boot and boot.kind == "efi" then
    -- the firmware's code, read-only, and its variable store (efi.lua)
    add("-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" .. e(boot.firmware or ""))
    if boot.vars then add("-drive", "if=pflash,format=raw,unit=1,file=" .. e(boot.vars)) end
  end

  add("-qmp", "unix:" .. e(paths.qmp))
  -- A second monitor, for the guard that powers the guest off if vmlua dies.
  if paths.guard then add("-qmp", "unix:" .. e(paths.guard) .. ",server=on,wait=off") end
  add("-chardev", "pipe,id=console,path=" .. e(paths.console))
  add("-serial", "chardev:console")

  -- Disk paths are absolute, so QEMU never reads a "protocol:" prefix in them.
  -- An ephemeral disk is its throw-away overlay (disks.lua). Firmware boots
  -- from the disks in their order, and never from the network.
  local efi_boot = boot and boot.kind == "efi"
  for i, d in ipairs(cfg.disks) do
    local id = "disk" .. (i - 1)
    local path, format = require("vmlua.disks").drive(d, i, paths)
    add("-drive", string.format("if=none,id=%s,file=%s,format=%s%s", id, e(path), format,
      d.readonly and ",readonly=on" or ""))
    add("-device", "virtio-blk-pci,drive=" .. id .. (efi_boot and (",bootindex=" .. (i - 1)) or ""))
  end
  -- The cloud-init seed: read-only, after the VM's own disks (root stays /dev/vda).
  local seed = cfg.cloudinit and require("vmlua.cloudinit").seed_arg(cfg)
  if seed then
    add("-drive", "if=none,id=seed,file=" .. e(seed) .. ",format=raw,readonly=on")
    add("-device", "virtio-blk-pci,drive=seed")
  end

  for i, n in ipairs(cfg.net) do
    local id = "net" .. (i - 1)
    if n.kind == "lan" then
      require("vmlua.lan").qemu_args(n, id, add, e)
    else
      local opt = { "user", "id=" .. id }
      for _, f in ipairs(n.forward) do
        opt[#opt + 1] = string.format("hostfwd=%s:%s:%d-:%d", f.protocol or "tcp", f.address, f.host, f.guest)
      end
      add("-netdev", table.concat(opt, ","))
      add("-device", "virtio-net-pci,netdev=" .. id)
    end
  end

  if virtiofsd then virtiofsd.qemu_args(cfg, paths, add, e) end
  if cfg.agent then require("vmlua.agent").qemu_args(paths, add, e) end -- qemu-guest-agent's port

  if opts and opts.incoming then add("-incoming", opts.incoming) end
  -- qemu = {...}: the definition's own arguments, last and unchecked.
  for _, arg in ipairs(cfg.qemu or {}) do add(arg) end
  return { file = file, args = args }
end

return qemu
