-- Tasks on the event loop: waits yield inside a task, drive the loop outside
-- one, and time out; a wait inside a plain loop callback is refused.
local core = require "vmlua.core"
local task = require "vmlua.task"

describe("vmlua.task", function()
  it("drives the loop itself when waiting outside a task", function()
    local t0 = core.now()
    assert.are.equal(42, task.await(function(wake) core.timer(0.02, 0, function() wake(42) end) end))
    assert.is_true(core.now() - t0 >= 0.015)
  end)

  it("runs tasks side by side, each waiting on its own", function()
    local order = {}
    local done = 0
    for _, d in ipairs { 0.03, 0.01, 0.02 } do
      task.spawn(function()
        task.sleep(d)
        order[#order + 1] = d
        done = done + 1
      end)
    end
    local poll
    task.await(function(wake) poll = core.timer(0, 0.005, function() if done == 3 then wake() end end) end, 5)
    poll:stop()
    assert.are.same({ 0.01, 0.02, 0.03 }, order)
  end)

  it("returns nil, 'timeout' when a wait times out, and cancels what it registered", function()
    local cancelled = false
    local a, b = task.await(function() return function() cancelled = true end end, 0.01)
    assert.is_nil(a)
    assert.are.equal("timeout", b)
    assert.is_true(cancelled)
  end)

  it("returns at once when woken before it would wait", function()
    assert.are.equal("now", task.await(function(wake) wake("now") end))
  end)

  it("waits on a condition until its predicate holds, or times out", function()
    local c, n = task.condition(), 0
    local ticker = core.timer(0.005, 0.005, function() n = n + 1; c.notify() end)
    assert.is_true(c.wait(function() return n >= 3 end, 5))
    ticker:stop()
    assert.are.equal(3, n)
    local ok, err = c.wait(function() return false end, 0.01)
    assert.is_nil(ok)
    assert.are.equal("timeout", err)
  end)

  it("refuses to wait inside a loop callback that is not a task", function()
    local err
    core.timer(0, 0, function()
      err = select(2, pcall(task.sleep, 1))
    end)
    task.sleep(0.01)
    assert.matches("cannot wait inside a loop callback", err)
  end)

  it("runs vmlua.after and vmlua.every callbacks as tasks that may wait", function()
    local log = {}
    task.after(0.01, function()
      task.sleep(0.01)
      log[#log + 1] = "after"
    end)
    local n = 0
    local every
    every = task.every(0.005, function()
      n = n + 1
      if n == 2 then every:stop() end
    end)
    local poll
    task.await(function(wake)
      poll = core.timer(0, 0.005, function() if #log == 1 and n == 2 then wake() end end)
    end, 5)
    poll:stop()
    task.sleep(0.02)
    assert.are.same({ "after" }, log)
    assert.are.equal(2, n)
  end)
end)
