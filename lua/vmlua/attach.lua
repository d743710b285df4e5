-- vm:console(): the terminal attached to a VM's serial console.
--
-- The terminal goes into raw mode: every key, Ctrl-C included, goes to the
-- guest, and what the guest prints comes to the terminal as it is. Ctrl-]
-- detaches (as in telnet and virsh); so does the VM's end. The console is
-- logged and kept for vm:expect() all along, attached or not.
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local machine = require "vmlua.machine"
local task = require "vmlua.task"

local attach = {
  detach_key = "\29", -- Ctrl-]
}

local ENDED = { stopped = true, error = true }

-- Waits until the user detaches or the VM ends; returns why.
local function attached(vm, con)
  local done = false
  local reader
  local why = task.await(function(wake)
    local function finish(reason)
      done = true
      wake(reason)
    end
    local err
    reader, err = core.reader(0, function(data)
      if done then return end
      if not data then return finish("input closed") end
      local at = data:find(attach.detach_key, 1, true)
      if at then
        if at > 1 then con:send(data:sub(1, at - 1)) end
        return finish("detached")
      end
      con:send(data)
    end)
    if not reader then return finish(err) end
    local function watch()
      vm.changed.once(function()
        if done then return end
        if ENDED[vm.state] then finish("ended") else watch() end
      end)
    end
    watch()
    return function() done = true end
  end)
  done = true
  if reader then reader:close() end
  return why
end

-- vm:console(): attaches the terminal to the console until Ctrl-] (or the
-- VM's end). The VM's console stream and buffer are vm.serial.
-- opts.stops: the caller stops the VM when the user detaches (vmlua FILE
-- of a file that only defines it), and the detach line says so.
function attach.console(self, opts)
  if machine.dry_run then return end
  if self.state ~= "running" and self.state ~= "paused" then
    errors.raise(self:_failure("cannot attach to the console: it is " .. self.state), 2)
  end
  local term = core.isatty(0) and core.isatty(1) and core.terminal(0)
  if not term then
    errors.raise(string.format("vm %s: cannot attach to the console: vmlua is not running on a terminal",
                               self.name), 2)
  end
  local con = self.serial
  local repl = package.loaded["vmlua.repl"]
  local give_back = repl and repl.suspend and repl.suspend()
  local function cleanup()
    con.tee = nil
    term:close() -- the mode it was in
    if give_back then give_back() end
    give_back = nil
  end
  local guard <close> = setmetatable({}, { __close = cleanup }) -- luacheck: ignore 211
  io.stdout:write("vmlua: attached to the console of ", self.name, "; Ctrl-] detaches\n")
  io.stdout:flush()
  assert(term:raw())
  -- Show the line the guest is on (its prompt, usually) as a reattached
  -- terminal would: its text only, since the terminal would answer a query
  -- in it (ESC[6n) to a guest that no longer waits for the answer.
  local partial = con.tail:match("[^\n]*$")
  io.stdout:write(partial)
  io.stdout:flush()
  con.tee = function(data)
    io.stdout:write(data)
    io.stdout:flush()
  end
  local why = attached(self, con)
  con.tee = nil
  term:restore()
  io.stdout:write("\n")
  if why == "detached" and opts and opts.stops then
    io.stdout:write("vmlua: detached from ", self.name, "; stopping it\n")
  elseif why == "detached" then
    io.stdout:write("vmlua: detached from ", tostring(self), "\n")
  elseif why == "ended" then
    io.stdout:write("vmlua: ", tostring(self), " ended", self.reason and (": " .. self.reason) or "",
                    "; detached\n")
  else
    io.stdout:write("vmlua: detached from ", self.name, ": ", tostring(why), "\n")
  end
  io.stdout:flush()
end

return attach
