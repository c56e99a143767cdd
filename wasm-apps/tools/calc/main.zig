//! calc, a tool (docs/tools.md): `{"expression": "2^100 / 3"}` in,
//! `{"result": "1267650600228229401496703205376/3"}` out, exact.

const std = @import("std");
const shared = @import("shared");
const calc = @import("calc.zig");

const tool = shared.tool;

pub const std_options: std.Options = .{ .log_level = .info, .logFn = shared.app.logLine };

const Input = struct { expression: []const u8 };

pub fn main() u8 {
    const allocator = shared.app.allocator;
    const input = tool.readInput(Input, allocator) catch return tool.fail(allocator, "the input must be {\"expression\": \"...\"}");
    defer input.deinit();
    var diagnostic = calc.Diagnostic{};
    const result = calc.evaluate(allocator, input.value.expression, &diagnostic) catch |err| return switch (err) {
        error.InvalidExpression => tool.failFmt(allocator, "not an expression at character {d}: use numbers, + - * / ^ and parentheses", .{diagnostic.pos + 1}),
        error.DivisionByZero => tool.fail(allocator, "division by zero"),
        error.BadExponent => tool.failFmt(allocator, "an exponent must be an integer of at most {d}", .{calc.exponent_max}),
        error.TooDeep => tool.fail(allocator, "the expression is nested too deeply"),
        error.OutOfMemory => tool.fail(allocator, "the result is too large"),
    };
    defer allocator.free(result);
    return tool.succeed(allocator, .{ .result = result });
}

test {
    _ = @import("calc.zig");
}
