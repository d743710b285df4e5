-- Tasks: coroutines driven by the event loop. A call that waits yields the
-- running task; a loop callback resumes it. Outside any task (plain lua5.4,
-- busted) a wait drives the loop itself until it is woken.
local core = require "vmlua.core"

local task = { dry_run = false }

local ours = setmetatable({}, { __mode = "k" })
local waiting = setmetatable({}, { __mode = "k" }) -- task -> ends its wait with an error

-- How an error in a task or callback is reported; the CLI replaces it.
function task.report(message)
  io.stderr:write("vmlua: ", tostring(message), "\n")
end
core.on_error(function(message) task.report(message) end)

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then task.report(debug.traceback(co, err)) end
end

-- Runs fn(...) as a task at once; returns its coroutine.
function task.spawn(fn, ...)
  local co = coroutine.create(fn)
  ours[co] = true
  resume(co, ...)
  return co
end

function task.current()
  local co = coroutine.running()
  if ours[co] then return co end
  return nil
end

-- Waits until register's wake function is called, and returns what it got.
-- register(wake) may return a function that cancels what it registered.
-- With a timeout (seconds), the wait returns nil, "timeout" when it passes.
function task.await(register, timeout)
  local co = task.current()
  local woken, result, timer, cancel
  local function wake(...)
    if woken then return end
    woken, result = true, table.pack(...)
    if timer then timer:close() end
    if co and coroutine.status(co) == "suspended" then resume(co) end
  end
  cancel = register(wake)
  if timeout and not woken then
    timer = core.timer(timeout, 0, function()
      if cancel then cancel() end
      wake(nil, "timeout")
    end)
  end
  if not woken then
    if co then
      local interrupted
      waiting[co] = function(message)
        interrupted = message
        if cancel then cancel() end
        wake()
      end
      coroutine.yield()
      waiting[co] = nil
      if interrupted then error(interrupted, 0) end
    elseif core.running() then
      error("cannot wait inside a loop callback: run the code in a task (vmlua.spawn)", 2)
    else
      while not woken do
        if not core.run("once") and not woken then
          error("nothing left to wait for: the wait can never end", 2)
        end
      end
    end
  end
  return table.unpack(result, 1, result.n)
end

-- Calls fn(..., wake), a function that reports through a callback (most of
-- vmlua.core's), and waits for what the callback gets; nil, "timeout" after
-- `timeout` seconds (nil: no limit).
function task.call(timeout, fn, ...)
  local args = table.pack(...)
  return task.await(function(wake)
    args[args.n + 1] = wake
    fn(table.unpack(args, 1, args.n + 1))
  end, timeout)
end

-- Ends the wait of a task with the error `message` (Ctrl-C at the prompt);
-- false when the task is not waiting.
function task.interrupt(co, message)
  local stop = waiting[co]
  if not stop then return false end
  stop(message or "interrupted")
  return true
end

function task.sleep(seconds)
  if task.dry_run then return end
  task.await(function(wake)
    local timer = core.timer(seconds, 0, wake)
    return function() timer:close() end
  end)
end

-- A condition: tasks wait on it until a predicate holds; notify() wakes
-- them all to check again. once(fn) calls fn at the next notify().
function task.condition()
  local waiters = {}
  local c = {}
  function c.notify()
    local now = waiters
    waiters = {}
    for _, fn in ipairs(now) do fn() end
  end
  function c.once(fn)
    waiters[#waiters + 1] = fn
  end
  -- Waits until pred() holds: true, or nil, "timeout" after `timeout` seconds.
  function c.wait(pred, timeout)
    local deadline = timeout and core.now() + timeout
    while not pred() do
      local left = deadline and deadline - core.now()
      if left and left <= 0 then return nil, "timeout" end
      local _, err = task.await(c.once, left)
      if err == "timeout" then return nil, "timeout" end
    end
    return true
  end
  return c
end

-- Runs fn as a task after `seconds`; returns the timer (timer:stop()).
function task.after(seconds, fn)
  return core.timer(seconds, 0, function() task.spawn(fn) end)
end

-- Runs fn as a task every `seconds` until the timer is stopped.
function task.every(seconds, fn)
  return core.timer(seconds, seconds, function() task.spawn(fn) end)
end

return task
