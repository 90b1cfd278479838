//! The small arithmetic language of a `derive` step: numbers, feature names, `+ - * /`,
//! unary minus, parentheses and a few functions (`log`, `exp`, `sqrt`, `abs`, `min`, `max`,
//! `pow`). It is compiled once at load into a tree over feature slots, so a row costs a walk
//! of that tree and no lookups by name.
//!
//! A feature name is letters, digits, `_` and `.` starting with a letter or `_`; a name with
//! other characters is written in backquotes (`` `app count` ``).

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(f64),
    /// A feature, by its slot in the list `compile` was given.
    Var(usize),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    Log,
    Exp,
    Sqrt,
    Abs,
    Min,
    Max,
    Pow,
}

impl Func {
    fn of(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "log" => (Func::Log, 1),
            "exp" => (Func::Exp, 1),
            "sqrt" => (Func::Sqrt, 1),
            "abs" => (Func::Abs, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "pow" => (Func::Pow, 2),
            _ => return None,
        })
    }
}

/// Where and why an expression does not parse (`at` is a 0-based character offset).
#[derive(Debug, PartialEq)]
pub struct ExprError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.at + 1, self.message)
    }
}

/// Parses `text`, resolving each name with `slot` (None: not a name it knows, which is an
/// error naming it).
pub fn compile(text: &str, slot: &mut dyn FnMut(&str) -> Option<usize>) -> Result<Expr, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser {
        chars: &chars,
        at: 0,
        slot,
        depth: 0,
        nodes: 0,
    };
    let e = p.sum()?;
    p.skip_space();
    if p.at < chars.len() {
        return Err(p.fail(format!("unexpected {:?}", chars[p.at])));
    }
    Ok(e)
}

/// Parentheses and calls nested deeper than this are refused: the tree is walked
/// recursively for every row.
const MAX_DEPTH: usize = 64;
/// Operators and values in one expression: `a + a + ...` builds a tree as deep as it is long,
/// which is walked (and dropped) recursively.
const MAX_NODES: usize = 1000;

struct Parser<'a, 'b> {
    chars: &'a [char],
    at: usize,
    slot: &'b mut dyn FnMut(&str) -> Option<usize>,
    depth: usize,
    nodes: usize,
}

impl Parser<'_, '_> {
    fn fail(&self, message: String) -> ExprError {
        ExprError {
            at: self.at,
            message,
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.at).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Counts one more node of the tree.
    fn node(&mut self) -> Result<(), ExprError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.fail(format!(
                "the expression has more than {MAX_NODES} operators and values"
            )));
        }
        Ok(())
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.product()?;
        loop {
            let op = match self.peek() {
                Some('+') => Op::Add,
                Some('-') => Op::Sub,
                _ => return Ok(e),
            };
            self.at += 1;
            self.node()?;
            e = Expr::Bin(op, Box::new(e), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.unary()?;
        loop {
            let op = match self.peek() {
                Some('*') => Op::Mul,
                Some('/') => Op::Div,
                _ => return Ok(e),
            };
            self.at += 1;
            self.node()?;
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat('-') {
            self.nested(|p| p.unary()).map(|e| Expr::Neg(Box::new(e)))
        } else {
            self.atom()
        }
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Expr, ExprError>,
    ) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(format!("nested more than {MAX_DEPTH} deep")));
        }
        let e = f(self);
        self.depth -= 1;
        e
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        self.node()?;
        let Some(c) = self.peek() else {
            return Err(self.fail("the expression ends where a value belongs".into()));
        };
        if c == '(' {
            self.at += 1;
            let e = self.nested(|p| p.sum())?;
            if !self.eat(')') {
                return Err(self.fail("a '(' is not closed".into()));
            }
            return Ok(e);
        }
        if c.is_ascii_digit() || c == '.' {
            return self.number();
        }
        let start = self.at;
        let name = if c == '`' {
            self.at += 1;
            let from = self.at;
            while self.chars.get(self.at).is_some_and(|&c| c != '`') {
                self.at += 1;
            }
            if self.at >= self.chars.len() {
                return Err(ExprError {
                    at: start,
                    message: "a '`' is not closed".into(),
                });
            }
            let name: String = self.chars[from..self.at].iter().collect();
            self.at += 1;
            name
        } else if c.is_alphabetic() || c == '_' {
            let from = self.at;
            while self
                .chars
                .get(self.at)
                .is_some_and(|&c| c.is_alphanumeric() || c == '_' || c == '.')
            {
                self.at += 1;
            }
            self.chars[from..self.at].iter().collect()
        } else {
            return Err(self.fail(format!("unexpected {c:?} where a value belongs")));
        };
        if c != '`' && self.peek() == Some('(') {
            let Some((func, arity)) = Func::of(&name) else {
                return Err(ExprError {
                    at: start,
                    message: format!(
                        "unknown function {name:?} (there are log, exp, sqrt, abs, min, max, pow)"
                    ),
                });
            };
            self.at += 1;
            let mut args = Vec::with_capacity(arity);
            if !self.eat(')') {
                loop {
                    args.push(self.nested(|p| p.sum())?);
                    if self.eat(')') {
                        break;
                    }
                    if !self.eat(',') {
                        return Err(self.fail(format!("expected ',' or ')' in {name}(...)")));
                    }
                }
            }
            if args.len() != arity {
                return Err(ExprError {
                    at: start,
                    message: format!("{name} takes {arity} argument(s), got {}", args.len()),
                });
            }
            return Ok(Expr::Call(func, args));
        }
        match (self.slot)(&name) {
            Some(s) => Ok(Expr::Var(s)),
            None => Err(ExprError {
                at: start,
                message: format!("{name:?} is not a feature the expression can read"),
            }),
        }
    }

    fn number(&mut self) -> Result<Expr, ExprError> {
        let start = self.at;
        let mut end = self.at;
        let digits = |c: &char| c.is_ascii_digit() || *c == '.';
        while self.chars.get(end).is_some_and(digits) {
            end += 1;
        }
        if matches!(self.chars.get(end), Some('e' | 'E')) {
            let mut k = end + 1;
            if matches!(self.chars.get(k), Some('+' | '-')) {
                k += 1;
            }
            if self.chars.get(k).is_some_and(char::is_ascii_digit) {
                end = k;
                while self.chars.get(end).is_some_and(char::is_ascii_digit) {
                    end += 1;
                }
            }
        }
        let text: String = self.chars[start..end].iter().collect();
        self.at = end;
        text.parse::<f64>().map(Expr::Num).map_err(|_| ExprError {
            at: start,
            message: format!("{text:?} is not a number"),
        })
    }
}

impl Expr {
    /// The value for one row; `var(slot)` reads a feature. NaN (a missing value) flows
    /// through, as it does in the model.
    pub fn eval(&self, var: &dyn Fn(usize) -> f64) -> f64 {
        match self {
            Expr::Num(x) => *x,
            Expr::Var(s) => var(*s),
            Expr::Neg(e) => -e.eval(var),
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(var), b.eval(var));
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => a / b,
                }
            }
            Expr::Call(f, args) => {
                let x = args[0].eval(var);
                let y = || args[1].eval(var);
                match f {
                    Func::Log => x.ln(),
                    Func::Exp => x.exp(),
                    Func::Sqrt => x.sqrt(),
                    Func::Abs => x.abs(),
                    Func::Min => x.min(y()),
                    Func::Max => x.max(y()),
                    Func::Pow => x.powf(y()),
                }
            }
        }
    }

    /// The feature slots it reads.
    pub fn vars(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(s) => out.push(*s),
            Expr::Neg(e) => e.vars(out),
            Expr::Bin(_, a, b) => {
                a.vars(out);
                b.vars(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.vars(out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &str) -> Option<usize> {
        ["a", "b", "app count", "geo.lat"]
            .iter()
            .position(|x| *x == n)
    }

    fn run(text: &str, vals: [f64; 4]) -> f64 {
        compile(text, &mut names).unwrap().eval(&|s| vals[s])
    }

    #[test]
    fn precedence_and_associativity_follow_arithmetic() {
        let v = [2.0, 3.0, 4.0, 5.0];
        assert_eq!(run("a + b * 2", v), 8.0);
        assert_eq!(run("(a + b) * 2", v), 10.0);
        assert_eq!(run("a - b - 1", v), -2.0);
        assert_eq!(run("12 / a / b", v), 2.0);
        assert_eq!(run("-a * -b", v), 6.0);
        assert_eq!(run("`app count` + geo.lat", v), 9.0);
        assert_eq!(run("1.5e1 + .5", v), 15.5);
    }

    #[test]
    fn functions_compute_what_their_names_say() {
        let v = [8.0, 2.0, -3.0, 0.0];
        assert!((run("log(exp(a))", v) - 8.0).abs() < 1e-12);
        assert!((run("sqrt(pow(a, b))", v) - 8.0).abs() < 1e-12);
        assert_eq!(run("abs(`app count`) + min(a, b) + max(a, b)", v), 13.0);
        assert!(run("a / geo.lat", v).is_infinite());
        assert!(run("log(`app count`)", v).is_nan());
    }

    #[test]
    fn errors_name_the_place_and_the_problem() {
        let err = |t: &str| compile(t, &mut names).unwrap_err().to_string();
        assert!(
            err("a + c").contains("\"c\" is not a feature"),
            "{}",
            err("a + c")
        );
        assert!(
            err("a + c").starts_with("at character 5"),
            "{}",
            err("a + c")
        );
        assert!(err("(a + b").contains("not closed"));
        assert!(err("a +").contains("ends where a value belongs"));
        assert!(err("foo(a)").contains("unknown function \"foo\""));
        assert!(err("min(a)").contains("min takes 2 argument(s), got 1"));
        assert!(err("a b").contains("unexpected 'b'"));
        assert!(err("1..2").contains("is not a number"));
        assert!(err("`a").contains("'`' is not closed"));
        assert!(err(&"(".repeat(100)).contains("nested more than"));
        assert!(err(&"-".repeat(100)).contains("nested more than"));
        assert!(err(&vec!["a"; 2000].join("+")).contains("more than 1000 operators"));
    }

    #[test]
    fn vars_lists_what_it_reads() {
        let e = compile("a * log(b) + a", &mut names).unwrap();
        let mut v = vec![];
        e.vars(&mut v);
        assert_eq!(v, [0, 1, 0]);
    }
}
