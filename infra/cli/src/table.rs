//! Plain-text output: aligned tables for lists, `key  value` lines for one object. No colour, no box
//! drawing, so the output pipes into `grep`, `awk` and `cut` as it is.

use serde_json::Value;

/// How a JSON value reads in a cell: strings bare, null as `-`, objects and arrays as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cuts `text` to `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart; the last column is not
/// padded (no trailing spaces).
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let one_line = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(one_line(c).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.push_str(&c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        let mut cells: Vec<String> = row.iter().map(|c| one_line(c)).collect();
        cells.resize(headers.len(), String::new());
        out.push_str(&line(cells));
    }
    out
}

/// A table of JSON objects: `columns` pairs a header with the field it shows.
pub fn objects(columns: &[(&str, &str)], items: &[Value]) -> String {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> =
        items.iter().map(|item| columns.iter().map(|(_, field)| cell(&item[*field])).collect()).collect();
    render(&headers, &rows)
}

/// One object as `key  value` lines: the `first` fields in that order, then every other field by name.
pub fn record(value: &Value, first: &[&str]) -> String {
    let Some(map) = value.as_object() else {
        return cell(value) + "\n";
    };
    let mut keys: Vec<&str> = first.iter().copied().filter(|k| map.contains_key(*k)).collect();
    let mut rest: Vec<&str> = map.keys().map(String::as_str).filter(|k| !first.contains(k)).collect();
    rest.sort_unstable();
    keys.extend(rest);
    let width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    keys.iter().map(|k| format!("{k:<width$}  {}\n", cell(&map[*k]))).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_lines_have_no_trailing_spaces() {
        let out = render(
            &["ID", "NAME", "STATUS"],
            &[
                vec!["ten_1".into(), "Acme Health".into(), "active".into()],
                vec!["ten_22".into(), "B".into(), "disabled".into()],
            ],
        );
        assert_eq!(out, "ID      NAME         STATUS\nten_1   Acme Health  active\nten_22  B            disabled\n");
        assert!(out.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn an_empty_list_is_just_its_header() {
        assert_eq!(render(&["QUEUE", "MESSAGES"], &[]), "QUEUE  MESSAGES\n");
    }

    #[test]
    fn cells_of_any_json_type_read_plainly_and_stay_on_one_line() {
        let items = vec![
            json!({"id": "a", "n": 3, "when": null, "error": {"code": "bad_zip"}, "note": "two\nlines"}),
            json!({"id": "b"}),
        ];
        let out = objects(&[("ID", "id"), ("N", "n"), ("WHEN", "when"), ("ERROR", "error"), ("NOTE", "note")], &items);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[1], r#"a   3  -     {"code":"bad_zip"}  two lines"#);
        assert_eq!(lines[2], "b   -  -     -                   -");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let out = render(&["NAME", "X"], &[vec!["Zürich".into(), "1".into()], vec!["Bern".into(), "2".into()]]);
        assert_eq!(out, "NAME    X\nZürich  1\nBern    2\n");
    }

    #[test]
    fn a_record_shows_the_chosen_fields_first_then_the_rest_by_name() {
        let v = json!({"updated_at": "u", "name": "Acme", "id": "ten_1", "created_at": "c", "status": "active"});
        assert_eq!(
            record(&v, &["id", "name", "status"]),
            "id          ten_1\nname        Acme\nstatus      active\ncreated_at  c\nupdated_at  u\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_visible_mark() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
    }
}
