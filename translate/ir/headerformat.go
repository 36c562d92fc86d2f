package ir

import (
	"errors"
	"fmt"
)

// HeaderFormatError checks the syntax Envoy's header parser requires of a
// header value to add (source/common/router/header_parser.cc; Istio's port,
// validateHeaderValue in pkg/config/validation/header_value_validator.go,
// which this follows): a small state machine over %VAR%, %VAR(arg)% and
// %VAR(["a","b"])%, where a literal % is written %%. Envoy rejects the
// whole resource for a value that breaks it. Which variables exist is not
// checked (neither does Istio).
func HeaderFormatError(value string) error {
	const (
		literal = iota
		varName
		expectArray
		expectString
		inString
		expectDelimOrEnd
		expectArgsEnd
		expectVarEnd
	)
	state := literal
	for pos := 0; pos < len(value); pos++ {
		ch := value[pos]
		hasNext := pos+1 < len(value)
		switch state {
		case literal:
			if ch != '%' {
				break
			}
			if !hasNext {
				return errors.New("un-escaped % (write %% for a literal %)")
			}
			if value[pos+1] == '%' {
				pos++
				break
			}
			state = varName
		case varName:
			switch ch {
			case '%':
				state = literal
			case '(':
				state = expectArray
			}
		case expectArray:
			if ch == '[' {
				state = expectString
			} else if ch != ' ' {
				state = inString
			}
		case expectDelimOrEnd:
			switch {
			case ch == ',':
				state = expectString
			case ch == ']':
				state = expectArgsEnd
			case ch != ' ':
				return errors.New("expecting ',', ']', or whitespace")
			}
		case expectString:
			if ch == '"' {
				state = inString
			} else if ch != ' ' {
				return errors.New(`expecting '"'`)
			}
		case inString:
			switch ch {
			case '\\':
				if !hasNext {
					return errors.New("un-terminated backslash in JSON string")
				}
				pos++
			case ')':
				state = expectVarEnd
			case '"':
				state = expectDelimOrEnd
			}
		case expectArgsEnd:
			if ch == ')' {
				state = expectVarEnd
			} else if ch != ' ' {
				return errors.New("expecting ')' or whitespace")
			}
		case expectVarEnd:
			if ch == '%' {
				state = literal
			} else if ch != ' ' {
				return errors.New("expecting '%' or whitespace")
			}
		}
	}
	if state != literal {
		return fmt.Errorf("un-terminated variable expression %q", value)
	}
	return nil
}
