//! Exact arithmetic on an expression: integers and decimals of any length,
//! `+ - * /`, `^` (an integer power), unary minus and parentheses. The value
//! is a fraction in lowest terms (std.math.big.Rational), never rounded.

const std = @import("std");
const Rational = std.math.big.Rational;
const Managed = std.math.big.int.Managed;

pub const Error = error{
    InvalidExpression,
    DivisionByZero,
    /// `^` with an exponent that is not an integer, or beyond `exponent_max`.
    BadExponent,
    TooDeep,
    OutOfMemory,
};

/// The largest exponent: 10^100000 is 42 KB of digits, far within a tool's memory.
pub const exponent_max = 100_000;
/// Nesting of parentheses and signs: the parser's recursion stays within the stack.
const depth_max = 200;

/// A parse error's place, for the message.
pub const Diagnostic = struct { pos: usize = 0 };

/// The value of `text` as "p" or "p/q" (lowest terms, the sign on p); the
/// caller owns it.
pub fn evaluate(allocator: std.mem.Allocator, text: []const u8, diagnostic: *Diagnostic) Error![]u8 {
    var parser = Parser{ .allocator = allocator, .text = text };
    errdefer diagnostic.pos = parser.pos;
    var value = try parser.expr();
    defer value.deinit();
    parser.skipSpace();
    if (parser.pos != text.len) return error.InvalidExpression;
    return format(allocator, value);
}

fn format(allocator: std.mem.Allocator, value: Rational) Error![]u8 {
    const p = try value.p.toConst().toStringAlloc(allocator, 10, .lower);
    defer allocator.free(p);
    if (value.q.toConst().orderAgainstScalar(1) == .eq) return allocator.dupe(u8, p);
    const q = try value.q.toConst().toStringAlloc(allocator, 10, .lower);
    defer allocator.free(q);
    return std.fmt.allocPrint(allocator, "{s}/{s}", .{ p, q });
}

const Parser = struct {
    allocator: std.mem.Allocator,
    text: []const u8,
    pos: usize = 0,
    depth: usize = 0,

    fn skipSpace(self: *Parser) void {
        while (self.pos < self.text.len and std.ascii.isWhitespace(self.text[self.pos])) self.pos += 1;
    }

    fn peek(self: *Parser) ?u8 {
        self.skipSpace();
        return if (self.pos < self.text.len) self.text[self.pos] else null;
    }

    // expr := term (("+" | "-") term)*
    fn expr(self: *Parser) Error!Rational {
        var left = try self.term();
        errdefer left.deinit();
        while (self.peek()) |op| {
            if (op != '+' and op != '-') break;
            self.pos += 1;
            var right = try self.term();
            defer right.deinit();
            if (op == '+') try left.add(left, right) else try left.sub(left, right);
        }
        return left;
    }

    // term := unary (("*" | "/") unary)*
    fn term(self: *Parser) Error!Rational {
        var left = try self.unary();
        errdefer left.deinit();
        while (self.peek()) |op| {
            if (op != '*' and op != '/') break;
            self.pos += 1;
            var right = try self.unary();
            defer right.deinit();
            if (op == '*') {
                try left.mul(left, right);
            } else {
                if (right.p.eqlZero()) return error.DivisionByZero;
                try left.div(left, right);
            }
        }
        return left;
    }

    // unary := ("-" | "+") unary | power
    fn unary(self: *Parser) Error!Rational {
        const sign = self.peek() orelse return error.InvalidExpression;
        if (sign != '-' and sign != '+') return self.power();
        self.pos += 1;
        try self.enter();
        defer self.depth -= 1;
        var value = try self.unary();
        if (sign == '-') value.negate();
        return value;
    }

    // power := primary ("^" unary)?   (right-associative: 2^3^2 is 2^9)
    fn power(self: *Parser) Error!Rational {
        var base = try self.primary();
        errdefer base.deinit();
        if ((self.peek() orelse 0) != '^') return base;
        self.pos += 1;
        try self.enter();
        defer self.depth -= 1;
        var exponent = try self.unary();
        defer exponent.deinit();
        if (exponent.q.toConst().orderAgainstScalar(1) != .eq) return error.BadExponent;
        const n = exponent.p.toConst().toInt(i64) catch return error.BadExponent;
        if (@abs(n) > exponent_max) return error.BadExponent;
        if (n < 0) {
            if (base.p.eqlZero()) return error.DivisionByZero;
            base.invert();
            // invert swaps p and q: the sign is on q now, and belongs on p.
            const negative = !base.q.isPositive();
            base.q.setSign(true);
            if (negative) base.p.setSign(false);
        }
        const e: u32 = @intCast(@abs(n));
        var p = try Managed.init(self.allocator);
        defer p.deinit();
        var q = try Managed.init(self.allocator);
        defer q.deinit();
        try p.pow(&base.p, e);
        try q.pow(&base.q, e);
        try base.copyRatio(p, q);
        return base;
    }

    // primary := number | "(" expr ")"
    fn primary(self: *Parser) Error!Rational {
        const c = self.peek() orelse return error.InvalidExpression;
        if (c == '(') {
            self.pos += 1;
            try self.enter();
            defer self.depth -= 1;
            var value = try self.expr();
            errdefer value.deinit();
            if ((self.peek() orelse 0) != ')') return error.InvalidExpression;
            self.pos += 1;
            return value;
        }
        return self.number();
    }

    // number := digits ("." digits)?  |  "." digits
    fn number(self: *Parser) Error!Rational {
        const start = self.pos;
        var digits = std.ArrayList(u8).init(self.allocator);
        defer digits.deinit();
        var fraction_digits: usize = 0;
        var seen_point = false;
        while (self.pos < self.text.len) : (self.pos += 1) {
            const c = self.text[self.pos];
            if (std.ascii.isDigit(c)) {
                try digits.append(c);
                if (seen_point) fraction_digits += 1;
            } else if (c == '.' and !seen_point) {
                seen_point = true;
            } else if (c == '_' and self.pos > start) {
                continue; // 1_000_000
            } else break;
        }
        if (digits.items.len == 0) {
            self.pos = start;
            return error.InvalidExpression;
        }
        var p = try Managed.init(self.allocator);
        defer p.deinit();
        p.setString(10, digits.items) catch return error.InvalidExpression;
        var ten = try Managed.initSet(self.allocator, 10);
        defer ten.deinit();
        var q = try Managed.init(self.allocator);
        defer q.deinit();
        try q.pow(&ten, @intCast(fraction_digits));
        var value = try Rational.init(self.allocator);
        errdefer value.deinit();
        try value.copyRatio(p, q);
        return value;
    }

    fn enter(self: *Parser) Error!void {
        if (self.depth >= depth_max) return error.TooDeep;
        self.depth += 1;
    }
};

fn expectValue(expected: []const u8, text: []const u8) !void {
    var diagnostic = Diagnostic{};
    const got = try evaluate(std.testing.allocator, text, &diagnostic);
    defer std.testing.allocator.free(got);
    try std.testing.expectEqualStrings(expected, got);
}

test "exact results: fractions in lowest terms, big integers, decimals" {
    try expectValue("3", "1 + 2");
    try expectValue("7/2", "7 / 2");
    try expectValue("3/10", "0.1 + 0.2");
    try expectValue("-1/3", "-(1/3)");
    try expectValue("14", "2 + 3 * 4");
    try expectValue("20", "(2 + 3) * 4");
    try expectValue("512", "2^3^2");
    try expectValue("1/8", "2^-3");
    try expectValue("-1/8", "(-2)^-3");
    try expectValue("340282366920938463463374607431768211456", "2^128");
    try expectValue("1", "(1/3) * 3");
    try expectValue("1000000", "1_000_000");
}

test "errors: division by zero, bad exponents, junk, nesting" {
    var diagnostic = Diagnostic{};
    const allocator = std.testing.allocator;
    try std.testing.expectError(error.DivisionByZero, evaluate(allocator, "1/(2-2)", &diagnostic));
    try std.testing.expectError(error.DivisionByZero, evaluate(allocator, "0^-1", &diagnostic));
    try std.testing.expectError(error.BadExponent, evaluate(allocator, "2^(1/2)", &diagnostic));
    try std.testing.expectError(error.BadExponent, evaluate(allocator, "2^1000001", &diagnostic));
    try std.testing.expectError(error.InvalidExpression, evaluate(allocator, "1 +", &diagnostic));
    try std.testing.expectError(error.InvalidExpression, evaluate(allocator, "2 x", &diagnostic));
    try std.testing.expectEqual(@as(usize, 2), diagnostic.pos);
    try std.testing.expectError(error.InvalidExpression, evaluate(allocator, "", &diagnostic));
    const deep = "(" ** 300 ++ "1" ++ ")" ** 300;
    try std.testing.expectError(error.TooDeep, evaluate(allocator, deep, &diagnostic));
}
