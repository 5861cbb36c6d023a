//! S3's XML: responses written with [`Xml`], request documents (CreateBucketConfiguration,
//! Delete, VersioningConfiguration, …) read into a small [`Element`] tree with limits on depth
//! and size. Parsing never panics; anything that is not well-formed is `MalformedXML`.

use quick_xml::Reader;
use quick_xml::events::Event;

pub const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Deepest nesting accepted in a request document.
const MAX_DEPTH: usize = 16;
/// Most elements accepted in a request document (DeleteObjects: 1000 objects of a few each).
const MAX_ELEMENTS: usize = 8192;

/// Escapes text for element content.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// A response document being written.
#[derive(Debug)]
pub struct Xml(String);

impl Xml {
    /// Starts a document whose root element is `root`, in S3's namespace.
    pub fn new(root: &str) -> Self {
        let mut s = String::with_capacity(512);
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        s.push_str(root);
        s.push_str(" xmlns=\"");
        s.push_str(NS);
        s.push_str("\">");
        Self(s)
    }

    /// Starts a document without a namespace (S3's error documents have none).
    pub fn bare(root: &str) -> Self {
        let mut s = String::with_capacity(256);
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        s.push_str(root);
        s.push('>');
        Self(s)
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>text</name>`, the text escaped.
    pub fn elem(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        self.0.push_str(&escape(text));
        self.close(name)
    }

    pub fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

/// An element of a request document: its local name, its text and its children.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of a child.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// The document was not well-formed, or broke a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn local(name: &[u8]) -> Result<String, Malformed> {
    let name = std::str::from_utf8(name).map_err(|_| Malformed)?;
    Ok(name.rsplit(':').next().unwrap_or(name).to_owned())
}

/// Parses a request document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, Malformed> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut count = 0usize;
    loop {
        match reader.read_event().map_err(|_| Malformed)? {
            Event::Start(e) => {
                count += 1;
                if stack.len() == MAX_DEPTH || count > MAX_ELEMENTS || root.is_some() {
                    return Err(Malformed);
                }
                stack.push(Element {
                    name: local(e.local_name().as_ref())?,
                    ..Element::default()
                });
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(Malformed);
                }
                let el = Element {
                    name: local(e.local_name().as_ref())?,
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(Malformed),
                }
            }
            Event::End(e) => {
                let el = stack.pop().ok_or(Malformed)?;
                if el.name != local(e.local_name().as_ref())? {
                    return Err(Malformed);
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = t.decode().map_err(|_| Malformed)?;
                    let text = quick_xml::escape::unescape(&text).map_err(|_| Malformed)?;
                    top.text.push_str(&text);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(Malformed);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(std::str::from_utf8(&t).map_err(|_| Malformed)?);
                }
            }
            Event::GeneralRef(r) => {
                // An entity or character reference inside text.
                let top = stack.last_mut().ok_or(Malformed)?;
                if let Some(c) = r.resolve_char_ref().map_err(|_| Malformed)? {
                    top.text.push(c);
                } else {
                    let name = std::str::from_utf8(&r).map_err(|_| Malformed)?;
                    let c = match name {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => return Err(Malformed),
                    };
                    top.text.push(c);
                }
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err(Malformed),
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(Malformed);
    }
    root.ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_delete_request() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>"#;
        let d = parse(doc).expect("parse");
        assert_eq!(d.name, "Delete");
        let keys: Vec<_> = d
            .children("Object")
            .filter_map(|o| o.child_text("Key"))
            .collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert_eq!(d.child_text("Quiet"), Some("true"));
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        for bad in [
            &b""[..],
            b"<a>",
            b"<a></b>",
            b"<a/><b/>",
            b"text",
            b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            b"<a>&unknown;</a>",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn writes_escaped_documents() {
        let mut x = Xml::new("R");
        x.elem("Key", "a<b&c");
        assert_eq!(
            x.finish("R"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R xmlns=\"{NS}\"><Key>a&lt;b&amp;c</Key></R>"
            )
        );
    }
}
