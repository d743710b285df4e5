-- Runs a sandboxed recipe's code under its limits: CPU time, checked by a
-- count hook on its coroutine (and on every coroutine it makes), and
-- memory, a cap on the Lua state's allocator (core.memory_limit) while it
-- runs. When the host code it calls waits (a probe of the accelerator),
-- the wait is passed on to the caller's coroutine with the limits paused.
local core = require "vmlua.core"
local errors = require "vmlua.errors"

local run = {}

run.HOOK_COUNT = 1000 -- VM instructions between two looks at the clock
local capped = false  -- the allocator is capped (by the outermost run)

local function cpu_message(box)
  return string.format("%s: stopped by the sandbox: it used more than %g s of CPU time (its cpu limit; "
    .. "--cpu-limit SECONDS raises it)", box.name, box.cpu)
end

local function memory_message(box)
  return string.format("%s: stopped by the sandbox: it needed more than %d MiB of memory (its memory limit; "
    .. "--memory-limit SIZE raises it)", box.name, box.memory // (1024 * 1024))
end

-- Puts the CPU hook on a coroutine of the box (the hook is per coroutine).
-- Past the deadline every coroutine of the box fails at its next look.
function run.hook(box, co)
  debug.sethook(co, function()
    if box.expired or os.clock() > box.deadline then
      box.expired = true
      error(cpu_message(box), 0)
    end
  end, "", run.HOOK_COUNT)
end

-- After a call that may have caught an error (pcall, resume): a limit that
-- was reached is raised again, so the recipe cannot swallow it.
function run.rethrow(box, ok, ...)
  if box.expired then error(cpu_message(box), 0) end
  if not ok and (...) == "not enough memory" and capped then error("not enough memory", 0) end
  return ok, ...
end

-- An error value out of the recipe as a string; never calls its metamethods.
local function message(err)
  if type(err) == "string" then return err end
  return "(error object is a " .. type(err) .. " value)"
end

local function cap(box)
  if capped then return false end
  core.memory_limit(box.memory)
  capped = true
  return true
end

local function uncap()
  capped = false
  return core.memory_limit()
end

-- run.call(box, fn, ...) -> fn's results, run as the box's code. Raises the
-- recipe's error, or a limit's, as a user error naming the recipe. Inside
-- a run of the same box (host code called back into it) fn runs at once.
function run.call(box, fn, ...)
  if box.depth > 0 then return fn(...) end
  local co = coroutine.create(function(...) return xpcall(fn, message, ...) end)
  box.runner, box.depth, box.expired = co, 1, nil
  run.hook(box, co)
  local left = box.cpu
  local args = table.pack(...)
  local r, mine, refused
  while true do
    box.deadline = os.clock() + left
    mine = cap(box)
    r = table.pack(coroutine.resume(co, table.unpack(args, 1, args.n)))
    if mine then refused = select(2, uncap()) or refused end
    if coroutine.status(co) ~= "suspended" then break end
    -- host code waits (task.await): the caller's coroutine waits for it
    left = math.max(0, box.deadline - os.clock())
    args = table.pack(coroutine.yield(table.unpack(r, 2, r.n)))
  end
  box.depth, box.runner = 0, nil
  local ok, err = r[1] and r[2], r[1] and r[3] or r[2]
  if box.expired then errors.raise(cpu_message(box)) end
  if not ok and refused then errors.raise(memory_message(box)) end
  if not ok then errors.raise(message(err)) end
  return table.unpack(r, 3, r.n)
end

return run
