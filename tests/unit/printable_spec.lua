-- Console text that vmlua shows (errors' console lines, vm.serial views, a
-- "stdio" console, values at the prompt) never carries the guest's escape
-- sequences to the terminal: a guest's ESC[6n would make the terminal type
-- its answer into the user's input.
local console = require "vmlua.console"
local repl = require "vmlua.repl"

describe("console.printable", function()
  it("drops escape sequences and keeps text, newlines and tabs", function()
    assert.are.equal("vmlua# ", console.printable("\27[6nvmlua# "))
    assert.are.equal("red plain\tx\n", console.printable("\27[1;31mred\27[0m plain\tx\n"))
    assert.are.equal("ab", console.printable("a\27]0;title\7b"))
    assert.are.equal("ab", console.printable("a\27]0;title\27\\b"))
    assert.are.equal("ab", console.printable("a\27cb"))
    assert.are.equal("ab", console.printable("a\27(Bb"))
    assert.are.equal("ab", console.printable("a\194\155b")) -- C1 CSI, UTF-8
  end)

  it("ends lines at their last carriage return and shows other control bytes", function()
    assert.are.equal("one\ntwo\n", console.printable("one\r\ntwo\r\r\n"))
    assert.are.equal("new", console.printable("old\rnew"))
    assert.are.equal("^A^G^? ^[", console.printable("\1\7\127 \27"))
  end)

  it("holds back an escape sequence cut between two chunks", function()
    local show = console.printer()
    assert.are.equal("ab", show("ab\27["))
    assert.are.equal("cd", show("6ncd\27"))
    assert.are.equal("X", show("[0mX"))
  end)

  it("is what a console's tail and last lines give; raw_tail keeps the bytes", function()
    local con = console.new {}
    con:_output("boot\r\n\27[6nvmlua# \27[6n")
    assert.are.equal("boot\nvmlua# ", con.tail)
    assert.are.equal("boot\nvmlua# ", con:last_lines(5))
    assert.are.equal("boot\r\n\27[6nvmlua# \27[6n", con.raw_tail)
    con:close()
  end)
end)

describe("the prompt", function()
  it("quotes a string with control bytes, so that its escapes show", function()
    assert.are.equal('"\\27[6nx"', repl.format("\27[6nx"))
    assert.are.equal("plain\ttext\n", repl.format("plain\ttext\n"))
  end)
end)
