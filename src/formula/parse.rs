//! Lexer and recursive-descent parser: formula text to an AST with source spans.
//!
//! Precedence, loosest first: comparisons, `&`, `+ -`, `* /`, unary minus. All binary
//! operators are left-associative. The size guards live here so that hostile input is
//! rejected before anything recursive (the checker, the compilers) walks it.

use super::functions::{self, FUNCTIONS};
use super::{
    FormulaError, FormulaErrorCode, MAX_DEPTH, MAX_FORMULA_CHARS, MAX_NODES, Span, ValueType,
};

/// A node of the formula AST.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// Filled in by the type checker: `None` means the expression is always blank
    /// (e.g. `BLANK()`), which fits wherever any type is expected.
    pub ty: Option<ValueType>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Number(f64),
    Text(String),
    Boolean(bool),
    Column(String),
    Neg(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Call(Call),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Concat,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Concat => "&",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}

/// A function call, resolved against the function table at parse time so later passes do
/// not look names up again.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Canonical (upper-case) name.
    pub name: &'static str,
    /// Index into the function table.
    pub(crate) func: usize,
    pub args: Vec<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Number(f64),
    Text(String),
    Ident(String),
    Braced(String),
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Amp,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Number(_) => "a number".into(),
            Tok::Text(_) => "a string".into(),
            Tok::Ident(name) => format!("'{name}'"),
            Tok::Braced(name) => format!("'{{{name}}}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Star => "'*'".into(),
            Tok::Slash => "'/'".into(),
            Tok::Amp => "'&'".into(),
            Tok::Eq => "'='".into(),
            Tok::Ne => "'!='".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Eof => "the end of the formula".into(),
        }
    }
}

struct Token {
    tok: Tok,
    span: Span,
}

fn syntax(message: impl Into<String>, span: Span) -> FormulaError {
    FormulaError::new(FormulaErrorCode::Syntax, message, span)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
    column: u32,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.pos..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn here(&self) -> Span {
        Span {
            start: self.pos,
            end: self.pos,
            line: self.line,
            column: self.column,
        }
    }

    fn tokens(mut self) -> Result<Vec<Token>, FormulaError> {
        let mut out = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            let mut span = self.here();
            let Some(c) = self.peek() else {
                out.push(Token {
                    tok: Tok::Eof,
                    span,
                });
                return Ok(out);
            };
            let tok = match c {
                '0'..='9' | '.' => self.number(span)?,
                '"' | '\'' => self.string(span)?,
                '{' => self.braced(span)?,
                c if c.is_alphabetic() || c == '_' => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        self.bump();
                    }
                    Tok::Ident(self.src[start..self.pos].to_string())
                }
                _ => {
                    self.bump();
                    match (c, self.peek()) {
                        ('(', _) => Tok::LParen,
                        (')', _) => Tok::RParen,
                        (',', _) => Tok::Comma,
                        ('+', _) => Tok::Plus,
                        ('-', _) => Tok::Minus,
                        ('*', _) => Tok::Star,
                        ('/', _) => Tok::Slash,
                        ('&', _) => Tok::Amp,
                        ('=', Some('=')) => {
                            self.bump();
                            Tok::Eq
                        }
                        ('=', _) => Tok::Eq,
                        ('!', Some('=')) => {
                            self.bump();
                            Tok::Ne
                        }
                        ('<', Some('>')) => {
                            self.bump();
                            Tok::Ne
                        }
                        ('<', Some('=')) => {
                            self.bump();
                            Tok::Le
                        }
                        ('<', _) => Tok::Lt,
                        ('>', Some('=')) => {
                            self.bump();
                            Tok::Ge
                        }
                        ('>', _) => Tok::Gt,
                        _ => {
                            span.end = self.pos;
                            return Err(syntax(format!("unexpected character '{c}'"), span));
                        }
                    }
                }
            };
            span.end = self.pos;
            out.push(Token { tok, span });
        }
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            n += 1;
        }
        n
    }

    fn number(&mut self, mut span: Span) -> Result<Tok, FormulaError> {
        let start = self.pos;
        let mut n = self.digits();
        if self.peek() == Some('.') {
            self.bump();
            n += self.digits();
        }
        if n == 0 {
            span.end = self.pos;
            return Err(syntax("expected a digit", span));
        }
        if matches!(self.peek(), Some('e' | 'E'))
            && (self.peek2().is_some_and(|c| c.is_ascii_digit())
                || matches!(self.peek2(), Some('+' | '-')))
        {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if self.digits() == 0 {
                span.end = self.pos;
                return Err(syntax("expected digits in the exponent", span));
            }
        }
        span.end = self.pos;
        let text = &self.src[start..self.pos];
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Tok::Number(v)),
            _ => Err(syntax(format!("number {text} is out of range"), span)),
        }
    }

    fn string(&mut self, mut span: Span) -> Result<Tok, FormulaError> {
        let quote = self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    span.end = self.pos;
                    return Err(syntax("unterminated string", span));
                }
                Some(c) if Some(c) == quote => return Ok(Tok::Text(out)),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                    // Other escapes stay as written, so regex patterns like '\d+' read
                    // naturally.
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => {
                        span.end = self.pos;
                        return Err(syntax("unterminated string", span));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn braced(&mut self, mut span: Span) -> Result<Tok, FormulaError> {
        self.bump();
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some('\n') => {
                    span.end = self.pos;
                    return Err(syntax("expected '}' to close the column name", span));
                }
                Some('}') => break,
                Some(_) => {
                    self.bump();
                }
            }
        }
        let name = self.src[start..self.pos].trim().to_string();
        self.bump();
        if name.is_empty() {
            span.end = self.pos;
            return Err(syntax("empty column name", span));
        }
        Ok(Tok::Braced(name))
    }
}

/// Parses a formula, enforcing the length, depth and size limits.
pub fn parse(source: &str) -> Result<Expr, FormulaError> {
    let chars = source.chars().count();
    if chars > MAX_FORMULA_CHARS {
        return Err(FormulaError {
            code: FormulaErrorCode::TooLong,
            message: format!(
                "formula is {chars} characters long; the limit is {MAX_FORMULA_CHARS}"
            ),
            span: None,
        });
    }
    let tokens = Lexer {
        src: source,
        pos: 0,
        line: 1,
        column: 1,
    }
    .tokens()?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        nesting: 0,
        nodes: 0,
    };
    let (expr, _) = parser.expr()?;
    let token = parser.peek();
    if token.tok != Tok::Eof {
        return Err(syntax(
            format!(
                "expected an operator or the end of the formula, found {}",
                token.tok.describe()
            ),
            token.span,
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current recursion depth: bounded so `((((…` cannot exhaust the stack.
    nesting: usize,
    nodes: usize,
}

/// A parsed node with its AST depth, kept alongside so depth is checked in one pass.
type Node = (Expr, usize);

fn join(a: Span, b: Span) -> Span {
    Span {
        start: a.start,
        end: b.end,
        line: a.line,
        column: a.column,
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends the stream with Eof and the parser never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let i = self.pos.min(self.tokens.len() - 1);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        Token {
            tok: self.tokens[i].tok.clone(),
            span: self.tokens[i].span,
        }
    }

    fn node(&mut self, kind: ExprKind, span: Span, depth: usize) -> Result<Node, FormulaError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(FormulaError::new(
                FormulaErrorCode::TooManyNodes,
                format!("formula has more than {MAX_NODES} parts"),
                span,
            ));
        }
        if depth > MAX_DEPTH {
            return Err(too_deep(span));
        }
        Ok((
            Expr {
                kind,
                span,
                ty: None,
            },
            depth,
        ))
    }

    fn enter(&mut self) -> Result<(), FormulaError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(self.peek().span));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Node, FormulaError> {
        self.enter()?;
        let result = self.comparison();
        self.nesting -= 1;
        result
    }

    fn binary_level(
        &mut self,
        next: fn(&mut Self) -> Result<Node, FormulaError>,
        op_of: fn(&Tok) -> Option<BinaryOp>,
    ) -> Result<Node, FormulaError> {
        let (mut left, mut depth) = next(self)?;
        while let Some(op) = op_of(&self.peek().tok) {
            self.advance();
            let (right, rdepth) = next(self)?;
            let span = join(left.span, right.span);
            let d = depth.max(rdepth) + 1;
            (left, depth) = self.node(
                ExprKind::Binary(op, Box::new(left), Box::new(right)),
                span,
                d,
            )?;
        }
        Ok((left, depth))
    }

    fn comparison(&mut self) -> Result<Node, FormulaError> {
        self.binary_level(Self::concat, |t| match t {
            Tok::Eq => Some(BinaryOp::Eq),
            Tok::Ne => Some(BinaryOp::Ne),
            Tok::Lt => Some(BinaryOp::Lt),
            Tok::Le => Some(BinaryOp::Le),
            Tok::Gt => Some(BinaryOp::Gt),
            Tok::Ge => Some(BinaryOp::Ge),
            _ => None,
        })
    }

    fn concat(&mut self) -> Result<Node, FormulaError> {
        self.binary_level(Self::additive, |t| match t {
            Tok::Amp => Some(BinaryOp::Concat),
            _ => None,
        })
    }

    fn additive(&mut self) -> Result<Node, FormulaError> {
        self.binary_level(Self::term, |t| match t {
            Tok::Plus => Some(BinaryOp::Add),
            Tok::Minus => Some(BinaryOp::Sub),
            _ => None,
        })
    }

    fn term(&mut self) -> Result<Node, FormulaError> {
        self.binary_level(Self::unary, |t| match t {
            Tok::Star => Some(BinaryOp::Mul),
            Tok::Slash => Some(BinaryOp::Div),
            _ => None,
        })
    }

    fn unary(&mut self) -> Result<Node, FormulaError> {
        match self.peek().tok {
            Tok::Minus => {
                let op = self.advance();
                self.enter()?;
                let inner = self.unary();
                self.nesting -= 1;
                let (inner, depth) = inner?;
                let span = join(op.span, inner.span);
                self.node(ExprKind::Neg(Box::new(inner)), span, depth + 1)
            }
            Tok::Plus => {
                self.advance();
                self.enter()?;
                let inner = self.unary();
                self.nesting -= 1;
                inner
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, FormulaError> {
        let token = self.advance();
        match token.tok {
            Tok::Number(v) => self.node(ExprKind::Number(v), token.span, 1),
            Tok::Text(s) => self.node(ExprKind::Text(s), token.span, 1),
            Tok::Braced(name) => self.node(ExprKind::Column(name), token.span, 1),
            Tok::Ident(name) => {
                if self.peek().tok == Tok::LParen {
                    return self.call(name, token.span);
                }
                if name.eq_ignore_ascii_case("true") {
                    self.node(ExprKind::Boolean(true), token.span, 1)
                } else if name.eq_ignore_ascii_case("false") {
                    self.node(ExprKind::Boolean(false), token.span, 1)
                } else {
                    self.node(ExprKind::Column(name), token.span, 1)
                }
            }
            Tok::LParen => {
                let (inner, depth) = self.expr()?;
                let close = self.peek();
                if close.tok != Tok::RParen {
                    return Err(syntax(
                        format!("expected ')' to close '(', found {}", close.tok.describe()),
                        close.span,
                    ));
                }
                self.advance();
                Ok((inner, depth))
            }
            other => Err(syntax(
                format!("expected an expression, found {}", other.describe()),
                token.span,
            )),
        }
    }

    fn call(&mut self, name: String, name_span: Span) -> Result<Node, FormulaError> {
        let Some(func) = functions::lookup(&name) else {
            return Err(FormulaError::new(
                FormulaErrorCode::UnknownFunction,
                format!("unknown function {name}"),
                name_span,
            ));
        };
        self.advance();
        let mut args = Vec::new();
        let mut depth = 0;
        if self.peek().tok == Tok::RParen {
            let close = self.advance();
            let span = join(name_span, close.span);
            return self.node(
                ExprKind::Call(Call {
                    name: FUNCTIONS[func].name,
                    func,
                    args,
                }),
                span,
                1,
            );
        }
        loop {
            let (arg, d) = self.expr()?;
            depth = depth.max(d);
            args.push(arg);
            let next = self.advance();
            match next.tok {
                Tok::Comma => continue,
                Tok::RParen => {
                    let span = join(name_span, next.span);
                    return self.node(
                        ExprKind::Call(Call {
                            name: FUNCTIONS[func].name,
                            func,
                            args,
                        }),
                        span,
                        depth + 1,
                    );
                }
                other => {
                    return Err(syntax(
                        format!("expected ')' after arguments, found {}", other.describe()),
                        next.span,
                    ));
                }
            }
        }
    }
}

fn too_deep(span: Span) -> FormulaError {
    FormulaError::new(
        FormulaErrorCode::TooDeep,
        format!("formula is nested more than {MAX_DEPTH} levels deep"),
        span,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(e) => panic!("expected an error for {src:?}, got {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_precedence_and_spans() {
        let e = parse("1 + 2 * 3").expect("parses");
        let ExprKind::Binary(BinaryOp::Add, left, right) = &e.kind else {
            panic!("expected +, got {e:?}")
        };
        assert_eq!(left.kind, ExprKind::Number(1.0));
        assert!(matches!(right.kind, ExprKind::Binary(BinaryOp::Mul, _, _)));
        assert_eq!(
            (right.span.start, right.span.end, right.span.column),
            (4, 9, 5)
        );
    }

    #[test]
    fn concat_binds_looser_than_plus_and_tighter_than_comparison() {
        let e = parse("a & 1 + 2 = b").expect("parses");
        let ExprKind::Binary(BinaryOp::Eq, left, _) = &e.kind else {
            panic!("{e:?}")
        };
        let ExprKind::Binary(BinaryOp::Concat, _, r) = &left.kind else {
            panic!("{left:?}")
        };
        assert!(matches!(r.kind, ExprKind::Binary(BinaryOp::Add, _, _)));
    }

    #[test]
    fn parses_literals_columns_and_calls() {
        let e = parse(r#"if({Last visit date} > x, 'it''s', "a\"b")"#);
        // '' is not an escape: the first string ends at the second quote.
        assert!(e.is_err());
        let e = parse(r#"IF({Last visit date} > x, 'it\'s', "a\"b")"#).expect("parses");
        let ExprKind::Call(call) = &e.kind else {
            panic!()
        };
        assert_eq!(call.name, "IF");
        assert_eq!(call.args.len(), 3);
        assert_eq!(call.args[1].kind, ExprKind::Text("it's".into()));
        assert_eq!(call.args[2].kind, ExprKind::Text("a\"b".into()));
        let ExprKind::Binary(_, l, _) = &call.args[0].kind else {
            panic!()
        };
        assert_eq!(l.kind, ExprKind::Column("Last visit date".into()));
        assert_eq!(parse("TRUE").expect("ok").kind, ExprKind::Boolean(true));
        assert_eq!(parse("false").expect("ok").kind, ExprKind::Boolean(false));
        assert_eq!(parse(".5e1").expect("ok").kind, ExprKind::Number(5.0));
        assert_eq!(
            parse("blank()").expect("ok").kind,
            ExprKind::Call(Call {
                name: "BLANK",
                func: functions::lookup("BLANK").expect("exists"),
                args: vec![]
            })
        );
        assert!(matches!(parse("--1").expect("ok").kind, ExprKind::Neg(_)));
        assert!(matches!(
            parse("1 <> 2").expect("ok").kind,
            ExprKind::Binary(BinaryOp::Ne, _, _)
        ));
    }

    #[test]
    fn reports_positions_and_expectations() {
        assert_eq!(
            err("IF(a > 1, 2, 3"),
            "1:15: expected ')' after arguments, found the end of the formula"
        );
        assert_eq!(
            err("ROUND(1.5 2)"),
            "1:11: expected ')' after arguments, found a number"
        );
        assert_eq!(
            err("(1 + 2"),
            "1:7: expected ')' to close '(', found the end of the formula"
        );
        assert_eq!(
            err("1 +"),
            "1:4: expected an expression, found the end of the formula"
        );
        assert_eq!(
            err("1 2"),
            "1:3: expected an operator or the end of the formula, found a number"
        );
        assert_eq!(err("a\n  # b"), "2:3: unexpected character '#'");
        assert_eq!(err("\"abc"), "1:1: unterminated string");
        assert_eq!(err("{abc"), "1:1: expected '}' to close the column name");
        assert_eq!(err("{ }"), "1:1: empty column name");
        assert_eq!(err("1e999"), "1:1: number 1e999 is out of range");
        assert_eq!(
            err(""),
            "1:1: expected an expression, found the end of the formula"
        );
        assert_eq!(
            parse(r"'\d\''").expect("ok").kind,
            ExprKind::Text(r"\d'".into())
        );
        let e = parse("NOPE(1)").expect_err("unknown");
        assert_eq!(e.code, FormulaErrorCode::UnknownFunction);
        assert_eq!(e.to_string(), "1:1: unknown function NOPE");
        assert_eq!(e.code_str(), "FORMULA_UNKNOWN_FUNCTION");
    }

    #[test]
    fn guards_length_depth_and_size() {
        let long = "1+".repeat(2048) + "1";
        let e = parse(&long).expect_err("too long");
        assert_eq!(e.code, FormulaErrorCode::TooLong);
        assert!(e.to_string().contains("limit is 4096"), "{e}");

        let deep = format!("{}1{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(
            parse(&deep).expect_err("deep").code,
            FormulaErrorCode::TooDeep
        );
        let ok = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        assert!(parse(&ok).is_ok());
        let nested_calls = format!("{}1{}", "ABS(".repeat(65), ")".repeat(65));
        assert_eq!(
            parse(&nested_calls).expect_err("deep").code,
            FormulaErrorCode::TooDeep
        );
        // A long left-associative chain is deep as an AST even without parentheses.
        let chain = "1".to_string() + &"+1".repeat(70);
        let e = parse(&chain).expect_err("deep");
        assert_eq!(e.code, FormulaErrorCode::TooDeep);
        assert_eq!(e.code_str(), "FORMULA_TOO_DEEP");

        let wide = format!("SUM({})", vec!["1"; 1001].join(","));
        let e = parse(&wide).expect_err("big");
        assert_eq!(e.code, FormulaErrorCode::TooManyNodes);
        assert!(e.to_string().contains("1000"), "{e}");
    }
}
