//! The OData filter of `:execute` (Azure SignalR 2023-07-01; the grammar Web PubSub documents),
//! parsed once and evaluated against each connection. Sans-io: text in, a [`Filter`] out, and
//! `Filter::matches` over plain data, so it is unit tested and fuzzed without a node.
//!
//! ```text
//! or      := and ("or" and)*
//! and     := compare ("and" compare)*
//! compare := unary (("eq"|"ne"|"gt"|"ge"|"lt"|"le"|"in") unary)?
//! unary   := "not" unary | primary
//! primary := literal | "userId" | "connectionId" | "groups" | function "(" args ")"
//!          | "(" or ")" | "(" literal ("," literal)+ ")"
//! literal := 'text' ('' is a quote) | integer | true | false | null
//! ```
//! Functions: `tolower`, `toupper`, `trim`, `length` (a string or `groups`), `concat`,
//! `indexof`, `substring(s, i[, n])`, `contains`, `startswith`, `endswith`. `not` binds tighter
//! than comparisons, as in Azure (`not length(userId) gt 5` is a type error). Identifiers and
//! keywords are case-insensitive; string comparisons are ordinal. `groups` holds the groups the
//! connection joined.

use std::fmt;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of parentheses, `not` and operators.
const MAX_DEPTH: usize = 64;

/// A parsed filter, and its text (what travels between nodes).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
    text: String,
}

/// What a filter is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub connection_id: &'a str,
    pub user_id: Option<&'a str>,
    pub groups: &'a [&'a str],
}

/// Why a filter was refused: what and where (a byte offset into the filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter at position {}: {}", self.position, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    Field(Field),
    Call(Function, Vec<Expr>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Op, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    UserId,
    ConnectionId,
    Groups,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    ToLower,
    ToUpper,
    Trim,
    Length,
    Concat,
    IndexOf,
    Substring,
    Contains,
    StartsWith,
    EndsWith,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<Value>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "number",
            Value::Text(_) => "string",
            Value::List(_) => "collection",
        }
    }
}

// ------------------------------------------------------------------------------ lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Int(i64),
    Open,
    Close,
    Comma,
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let error = |position: usize, message: &str| FilterError { position, message: message.to_owned() };
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        match bytes[at] {
            b' ' | b'\t' | b'\r' | b'\n' => at += 1,
            b'(' => {
                tokens.push((start, Token::Open));
                at += 1;
            }
            b')' => {
                tokens.push((start, Token::Close));
                at += 1;
            }
            b',' => {
                tokens.push((start, Token::Comma));
                at += 1;
            }
            b'\'' => {
                let mut value = String::new();
                at += 1;
                loop {
                    let Some(offset) = text[at..].find('\'') else {
                        return Err(error(start, "a string literal is not closed"));
                    };
                    value.push_str(&text[at..at + offset]);
                    at += offset + 1;
                    if bytes.get(at) == Some(&b'\'') {
                        value.push('\'');
                        at += 1;
                    } else {
                        break;
                    }
                }
                tokens.push((start, Token::Text(value)));
            }
            b'-' | b'0'..=b'9' => {
                at += 1;
                while at < bytes.len() && bytes[at].is_ascii_digit() {
                    at += 1;
                }
                let number = text[start..at].parse::<i64>().map_err(|_| error(start, "not a whole number in range"))?;
                tokens.push((start, Token::Int(number)));
            }
            b if b.is_ascii_alphabetic() => {
                while at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
                    at += 1;
                }
                tokens.push((start, Token::Word(text[start..at].to_ascii_lowercase())));
            }
            _ => return Err(error(start, "unexpected character")),
        }
    }
    Ok(tokens)
}

// ----------------------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(at, _)| *at)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError { position: self.position(), message: message.into() })
    }

    fn word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&token) {
            self.next += 1;
            Ok(())
        } else {
            self.error(format!("expected {what}"))
        }
    }

    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T, FilterError>) -> Result<T, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.word("or") {
            self.next += 1;
            let right = self.nested(Self::and)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.compare()?;
        while self.word("and") {
            self.next += 1;
            let right = self.nested(Self::compare)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn compare(&mut self) -> Result<Expr, FilterError> {
        let left = self.unary()?;
        let op = match self.peek() {
            Some(Token::Word(w)) => match w.as_str() {
                "eq" => Some(Op::Eq),
                "ne" => Some(Op::Ne),
                "gt" => Some(Op::Gt),
                "ge" => Some(Op::Ge),
                "lt" => Some(Op::Lt),
                "le" => Some(Op::Le),
                "in" => None,
                _ => return Ok(left),
            },
            _ => return Ok(left),
        };
        self.next += 1;
        let right = self.unary()?;
        Ok(match op {
            Some(op) => Expr::Compare(op, Box::new(left), Box::new(right)),
            None => Expr::In(Box::new(left), Box::new(right)),
        })
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.word("not") {
            self.next += 1;
            return self.nested(|p| p.unary()).map(|e| Expr::Not(Box::new(e)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let Some((_, token)) = self.tokens.get(self.next).cloned() else {
            return self.error("the filter ends too early");
        };
        self.next += 1;
        match token {
            Token::Text(text) => Ok(Expr::Literal(Value::Text(text))),
            Token::Int(number) => Ok(Expr::Literal(Value::Int(number))),
            Token::Open => self.nested(|p| {
                let first = p.or()?;
                if p.peek() != Some(&Token::Comma) {
                    p.expect(Token::Close, "')'")?;
                    return Ok(first);
                }
                let mut items = vec![first];
                while p.peek() == Some(&Token::Comma) {
                    p.next += 1;
                    items.push(p.or()?);
                }
                p.expect(Token::Close, "')'")?;
                Ok(Expr::List(items))
            }),
            Token::Word(word) => match word.as_str() {
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                "null" => Ok(Expr::Literal(Value::Null)),
                "userid" => Ok(Expr::Field(Field::UserId)),
                "connectionid" => Ok(Expr::Field(Field::ConnectionId)),
                "groups" => Ok(Expr::Field(Field::Groups)),
                name => {
                    let function = match name {
                        "tolower" => Function::ToLower,
                        "toupper" => Function::ToUpper,
                        "trim" => Function::Trim,
                        "length" => Function::Length,
                        "concat" => Function::Concat,
                        "indexof" => Function::IndexOf,
                        "substring" => Function::Substring,
                        "contains" => Function::Contains,
                        "startswith" => Function::StartsWith,
                        "endswith" => Function::EndsWith,
                        _ => {
                            self.next -= 1;
                            return self.error(format!("unknown name '{name}'"));
                        }
                    };
                    self.expect(Token::Open, "'(' after a function name")?;
                    let args = self.nested(|p| {
                        let mut args = vec![p.or()?];
                        while p.peek() == Some(&Token::Comma) {
                            p.next += 1;
                            args.push(p.or()?);
                        }
                        p.expect(Token::Close, "')'")?;
                        Ok(args)
                    })?;
                    let arity_ok = match function {
                        Function::ToLower | Function::ToUpper | Function::Trim | Function::Length => args.len() == 1,
                        Function::Substring => matches!(args.len(), 2 | 3),
                        _ => args.len() == 2,
                    };
                    if !arity_ok {
                        self.next -= 1;
                        return self.error(format!("wrong number of arguments for '{name}'"));
                    }
                    Ok(Expr::Call(function, args))
                }
            },
            Token::Close | Token::Comma => {
                self.next -= 1;
                self.error("expected a value")
            }
        }
    }
}

impl Filter {
    /// Parses `text`; errors name the byte offset of the problem.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError {
                position: MAX_FILTER_BYTES,
                message: format!("longer than {MAX_FILTER_BYTES} bytes"),
            });
        }
        let tokens = lex(text)?;
        let mut parser = Parser { tokens, next: 0, end: text.len(), depth: 0 };
        let expr = parser.or()?;
        if parser.next < parser.tokens.len() {
            return parser.error("unexpected text after the filter");
        }
        let filter = Filter { expr, text: text.to_owned() };
        // Catch type errors that do not depend on the connection (a non-boolean filter, `not 5`).
        filter.check_types()?;
        Ok(filter)
    }

    /// The filter as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `subject` matches (a filter that fails to evaluate for it does not).
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        matches!(eval(&self.expr, subject), Ok(Value::Bool(true)))
    }

    fn check_types(&self) -> Result<(), FilterError> {
        let probe = Subject { connection_id: "c", user_id: Some("u"), groups: &["g"] };
        match eval(&self.expr, &probe) {
            Ok(Value::Bool(_)) => Ok(()),
            Ok(other) => {
                Err(FilterError { position: 0, message: format!("the filter is a {}, expected a bool", other.kind()) })
            }
            Err(message) => Err(FilterError { position: 0, message }),
        }
    }
}

// -------------------------------------------------------------------------- evaluation

fn eval(expr: &Expr, subject: &Subject<'_>) -> Result<Value, String> {
    Ok(match expr {
        Expr::Literal(value) => value.clone(),
        Expr::Field(Field::UserId) => subject.user_id.map_or(Value::Null, |u| Value::Text(u.to_owned())),
        Expr::Field(Field::ConnectionId) => Value::Text(subject.connection_id.to_owned()),
        Expr::Field(Field::Groups) => {
            Value::List(subject.groups.iter().map(|g| Value::Text((*g).to_owned())).collect())
        }
        Expr::List(items) => Value::List(items.iter().map(|item| eval(item, subject)).collect::<Result<_, _>>()?),
        Expr::Not(inner) => match eval(inner, subject)? {
            Value::Bool(b) => Value::Bool(!b),
            other => return Err(format!("'not' needs a bool, got a {}", other.kind())),
        },
        Expr::And(left, right) => Value::Bool(boolean(left, subject, "and")? & boolean(right, subject, "and")?),
        Expr::Or(left, right) => Value::Bool(boolean(left, subject, "or")? | boolean(right, subject, "or")?),
        Expr::Compare(op, left, right) => compare(*op, eval(left, subject)?, eval(right, subject)?)?,
        Expr::In(item, list) => match eval(list, subject)? {
            Value::List(items) => Value::Bool(items.contains(&eval(item, subject)?)),
            other => return Err(format!("'in' needs a collection, got a {}", other.kind())),
        },
        Expr::Call(function, args) => {
            let args: Vec<Value> = args.iter().map(|a| eval(a, subject)).collect::<Result<_, _>>()?;
            call(*function, args)?
        }
    })
}

fn boolean(expr: &Expr, subject: &Subject<'_>, op: &str) -> Result<bool, String> {
    match eval(expr, subject)? {
        Value::Bool(b) => Ok(b),
        other => Err(format!("'{op}' needs bools, got a {}", other.kind())),
    }
}

fn compare(op: Op, left: Value, right: Value) -> Result<Value, String> {
    use std::cmp::Ordering;
    let ordering = match (&left, &right) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, _) | (_, Value::Null) => None,
        _ => return Err(format!("cannot compare a {} with a {}", left.kind(), right.kind())),
    };
    let result = match (op, ordering) {
        (Op::Eq, None) => left == right,
        (Op::Ne, None) => left != right,
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    };
    Ok(Value::Bool(result))
}

fn call(function: Function, args: Vec<Value>) -> Result<Value, String> {
    let text = |value: &Value| match value {
        Value::Text(text) => Ok(Some(text.clone())),
        Value::Null => Ok(None),
        other => Err(format!("expected a string, got a {}", other.kind())),
    };
    let int = |value: &Value| match value {
        Value::Int(n) => Ok(*n),
        other => Err(format!("expected a number, got a {}", other.kind())),
    };
    // A null string argument makes the result null (OData), so `tolower(userId) eq 'x'` is simply
    // false for an anonymous connection.
    Ok(match function {
        Function::Length => match &args[0] {
            Value::List(items) => Value::Int(items.len() as i64),
            value => text(value)?.map_or(Value::Null, |t| Value::Int(t.chars().count() as i64)),
        },
        Function::ToLower => text(&args[0])?.map_or(Value::Null, |t| Value::Text(t.to_lowercase())),
        Function::ToUpper => text(&args[0])?.map_or(Value::Null, |t| Value::Text(t.to_uppercase())),
        Function::Trim => text(&args[0])?.map_or(Value::Null, |t| Value::Text(t.trim().to_owned())),
        Function::Concat => match (text(&args[0])?, text(&args[1])?) {
            (Some(a), Some(b)) => Value::Text(a + &b),
            _ => Value::Null,
        },
        Function::Contains | Function::StartsWith | Function::EndsWith | Function::IndexOf => {
            match (text(&args[0])?, text(&args[1])?) {
                (Some(a), Some(b)) => match function {
                    Function::Contains => Value::Bool(a.contains(&b)),
                    Function::StartsWith => Value::Bool(a.starts_with(&b)),
                    Function::EndsWith => Value::Bool(a.ends_with(&b)),
                    _ => Value::Int(a.find(&b).map_or(-1, |at| a[..at].chars().count() as i64)),
                },
                _ if function == Function::IndexOf => Value::Null,
                _ => Value::Bool(false),
            }
        }
        Function::Substring => {
            let start = int(&args[1])?;
            let length = args.get(2).map(int).transpose()?;
            match text(&args[0])? {
                None => Value::Null,
                Some(t) => {
                    let chars: Vec<char> = t.chars().collect();
                    let start = start.clamp(0, chars.len() as i64) as usize;
                    let end = length.map_or(chars.len(), |n| {
                        (start as i64).saturating_add(n.max(0)).min(chars.len() as i64) as usize
                    });
                    Value::Text(chars[start..end.max(start)].iter().collect())
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(user: Option<&'a str>, connection: &'a str, groups: &'a [&'a str]) -> Subject<'a> {
        Subject { connection_id: connection, user_id: user, groups }
    }

    fn check(filter: &str, subject: &Subject<'_>) -> bool {
        Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(subject)
    }

    #[test]
    fn every_operator_and_function() {
        let s = subject(Some("listener-7"), "c123", &["g1", "team"]);
        for (filter, expected) in [
            ("userId eq 'listener-7'", true),
            ("userId ne 'listener-7'", false),
            ("connectionId gt 'c100'", true),
            ("connectionId ge 'c123'", true),
            ("connectionId lt 'c123'", false),
            ("connectionId le 'c123'", true),
            ("'g1' in groups", true),
            ("'g2' in groups", false),
            ("userId in ('a', 'listener-7')", true),
            ("userId in ('a', 'b')", false),
            ("startswith(userId, 'listener-')", true),
            ("endswith(userId, '-7')", true),
            ("contains(userId, 'ten')", true),
            ("tolower('ABC') eq 'abc' and toupper(userId) eq 'LISTENER-7'", true),
            ("trim('  x ') eq 'x'", true),
            ("length(userId) eq 10", true),
            ("length(groups) eq 2", true),
            ("concat(userId, '!') eq 'listener-7!'", true),
            ("indexof(userId, 'ten') eq 3", true),
            ("indexof(userId, 'zzz') eq -1", true),
            ("substring(userId, 9) eq '7'", true),
            ("substring(userId, 0, 4) eq 'list'", true),
            ("substring(userId, 1, 9223372036854775807) eq 'istener-7'", true),
            ("substring(userId, -9223372036854775808, -5) eq ''", true),
            ("userId eq null", false),
            ("userId ne null", true),
            ("true", true),
            ("not false", true),
            ("userId eq 'u1' and connectionId ne '123'", false),
            ("'g1' in groups or 'g2' in groups", true),
            ("userId eq 'listener-7' and (not ('g1' in groups))", false),
            ("USERID EQ 'listener-7' AND 'g1' IN GROUPS", true),
            ("userId eq 'it''s'", false),
        ] {
            assert_eq!(check(filter, &s), expected, "{filter}");
        }
        assert!(check("userId eq 'it''s'", &subject(Some("it's"), "c", &[])), "'' is a quote");
        assert!(check("userId eq null", &subject(None, "c", &[])), "anonymous");
        assert!(!check("startswith(userId, 'x')", &subject(None, "c", &[])), "null strings match nothing");
    }

    #[test]
    fn precedence_not_then_comparisons_then_and_then_or() {
        let s = subject(Some("a"), "c", &[]);
        // or is weakest: true or (false and false).
        assert!(check("userId eq 'a' or userId eq 'b' and userId eq 'c'", &s));
        // and binds tighter than or: (false and x) or true.
        assert!(check("userId eq 'b' and userId eq 'c' or userId eq 'a'", &s));
        // not binds tighter than a comparison: `not length(userId) gt 5` is a type error.
        let error = Filter::parse("not length(userId) gt 5").unwrap_err();
        assert!(error.message.contains("'not' needs a bool"), "{error}");
        assert!(check("not (length(userId) gt 5)", &s));
    }

    #[test]
    fn errors_name_their_position() {
        for (filter, position) in [
            ("userId eq", 9),
            ("userId eq 'open", 10),
            ("userId eq 'a' and", 17),
            ("userId == 'a'", 7),
            ("frobnicate eq 'a'", 0),
            ("(userId eq 'a'", 14),
            ("userId eq 'a')", 13),
            ("startswith(userId)", 17),
            ("userId eq 99999999999999999999", 10),
        ] {
            let error = Filter::parse(filter).expect_err(filter);
            assert_eq!(error.position, position, "{filter}: {error}");
        }
        assert!(Filter::parse("userId").is_err(), "not a bool");
        assert!(Filter::parse("length(userId) and true").is_err());
        assert!(Filter::parse(&"x".repeat(MAX_FILTER_BYTES + 1)).is_err());
        assert!(Filter::parse(&format!("{}true{}", "(".repeat(100), ")".repeat(100))).is_err(), "too deep");
        assert!(Filter::parse(&format!("{}true", "not ".repeat(100))).is_err(), "too deep");
    }

    /// `not`, `and` and `or` agree with Rust's on every combination of three comparisons.
    #[test]
    fn connectives_follow_boolean_algebra() {
        let s = subject(Some("b"), "c", &["g"]);
        let atoms = [("userId eq 'b'", true), ("userId eq 'x'", false), ("'g' in groups", true)];
        for (a, va) in atoms {
            for (b, vb) in atoms {
                for (c, vc) in atoms {
                    assert_eq!(check(&format!("{a} and {b} or {c}"), &s), va && vb || vc);
                    assert_eq!(check(&format!("{a} or {b} and {c}"), &s), va || vb && vc);
                    assert_eq!(check(&format!("not ({a}) and ({b} or not ({c}))"), &s), !va && (vb || !vc));
                }
            }
        }
    }

    /// Property: random filters, written with random case, spacing and redundant parentheses,
    /// evaluate as a reference model of the grammar says, on random subjects.
    #[test]
    fn generated_filters_agree_with_a_reference_model() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let user = ["alice", "bob-1", "Carol", "listener-7", "it's"][rng.below(5)].to_owned();
            let connection = ["c1", "c22", "d3"][rng.below(3)].to_owned();
            let groups: Vec<&str> = ["g1", "team", "x"].into_iter().filter(|_| rng.below(2) == 0).collect();
            let (text, expected) = boolean(&mut rng, 3, &user, &connection, &groups);
            let subject = subject(Some(&user), &connection, &groups);
            let filter = Filter::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(filter.matches(&subject), expected, "{text} on {user}/{connection}/{groups:?}");
        }
    }

    /// A small deterministic generator (xorshift64*), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }

        /// `word` in a random case (keywords and names are case-insensitive).
        fn case(&mut self, word: &str) -> String {
            word.chars().map(|c| if self.below(3) == 0 { c.to_ascii_uppercase() } else { c }).collect()
        }
    }

    fn quote(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    /// A string-valued expression over the subject and its value.
    fn string(rng: &mut Rng, user: &str, connection: &str) -> (String, String) {
        let field = |rng: &mut Rng| match rng.below(2) {
            0 => (rng.case("userId"), user.to_owned()),
            _ => (rng.case("connectionId"), connection.to_owned()),
        };
        let (text, value) = field(rng);
        match rng.below(7) {
            0 => (format!("{}({text})", rng.case("tolower")), value.to_ascii_lowercase()),
            1 => (format!("{}({text})", rng.case("toupper")), value.to_ascii_uppercase()),
            2 => (format!("{}({text})", rng.case("trim")), value.trim().to_owned()),
            3 => (format!("{}({text}, '-x')", rng.case("concat")), format!("{value}-x")),
            4 => {
                let from = rng.below(value.len() + 1);
                (format!("{}({text}, {from})", rng.case("substring")), value[from..].to_owned())
            }
            5 => (quote(&value), value),
            _ => (text, value),
        }
    }

    /// A boolean expression and its value under the reference model.
    fn boolean(rng: &mut Rng, depth: usize, user: &str, connection: &str, groups: &[&str]) -> (String, bool) {
        let choice = if depth == 0 { rng.below(6) } else { rng.below(10) };
        match choice {
            0 => {
                let (left, a) = string(rng, user, connection);
                let (right, b) = string(rng, user, connection);
                type Compare = fn(&String, &String) -> bool;
                let ops: [(&str, Compare); 6] = [
                    ("eq", |a, b| a == b),
                    ("ne", |a, b| a != b),
                    ("gt", |a, b| a > b),
                    ("ge", |a, b| a >= b),
                    ("lt", |a, b| a < b),
                    ("le", |a, b| a <= b),
                ];
                let (op, f) = ops[rng.below(6)];
                (format!("{left} {} {right}", rng.case(op)), f(&a, &b))
            }
            1 => {
                let group = ["g1", "team", "x", "none"][rng.below(4)];
                (format!("'{group}' {} {}", rng.case("in"), rng.case("groups")), groups.contains(&group))
            }
            2 => {
                let (text, value) = string(rng, user, connection);
                let probe = ["al", "-1", "7", "c", "it''s", ""][rng.below(6)].replace("''", "'");
                type Test = fn(&str, &str) -> bool;
                let functions: [(&str, Test); 3] = [
                    ("startswith", |s, p| s.starts_with(p)),
                    ("endswith", |s, p| s.ends_with(p)),
                    ("contains", |s, p| s.contains(p)),
                ];
                let (name, f) = functions[rng.below(3)];
                (format!("{}({text}, {})", rng.case(name), quote(&probe)), f(&value, &probe))
            }
            3 => {
                let (text, value) = string(rng, user, connection);
                let limit = rng.below(12);
                let (length, len) = match rng.below(2) {
                    0 => (format!("{}({text})", rng.case("length")), value.chars().count()),
                    _ => (format!("{}({})", rng.case("length"), rng.case("groups")), groups.len()),
                };
                (format!("{length} {} {limit}", rng.case("ge")), len >= limit)
            }
            4 => {
                let (text, value) = string(rng, user, connection);
                let options = ["alice", "c1", "bob-1"];
                let list = options.iter().map(|o| quote(o)).collect::<Vec<_>>().join(", ");
                (format!("{text} {} ({list})", rng.case("in")), options.contains(&value.as_str()))
            }
            5 => {
                let value = rng.below(2) == 0;
                (rng.case(if value { "true" } else { "false" }), value)
            }
            6 => {
                let (inner, value) = boolean(rng, depth - 1, user, connection, groups);
                (format!("{} ({inner})", rng.case("not")), !value)
            }
            7 => {
                let (inner, value) = boolean(rng, depth - 1, user, connection, groups);
                (format!("( {inner} )"), value)
            }
            8 => {
                let (a, x) = boolean(rng, depth - 1, user, connection, groups);
                let (b, y) = boolean(rng, depth - 1, user, connection, groups);
                (format!("({a}) {} ({b})", rng.case("and")), x && y)
            }
            _ => {
                let (a, x) = boolean(rng, depth - 1, user, connection, groups);
                let (b, y) = boolean(rng, depth - 1, user, connection, groups);
                (format!("({a}) {} ({b})", rng.case("or")), x || y)
            }
        }
    }
}
