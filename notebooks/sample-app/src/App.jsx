import { useState } from 'react'

export default function App() {
  const [count, setCount] = useState(0)
  return (
    <main>
      <header className="header">
        <h1>Corner Shop</h1>
        <p>Fresh things, every day.</p>
      </header>
      <section className="card">
        <p>Sign-ups this week: {count}</p>
        <button onClick={() => setCount((c) => c + 1)}>Sign up</button>
      </section>
    </main>
  )
}
